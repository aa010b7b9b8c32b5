-- An exact sliding window for a limit's requests and tokens at once, on Redis's own clock (TIME):
-- every process that shares the keys sees the same clock, whatever its own says.
--
-- KEYS[1], KEYS[2]: requests: a sorted set of grants (member "<time>:<seq>:<units>", score the
--   grant's time in microseconds) and the sum of their units.
-- KEYS[3], KEYS[4]: tokens: the same two keys.
-- KEYS[5]: a counter that makes members unique.
-- ARGV[1..3]: requests: the window in microseconds (0: no request limit), the most units in any
--   window, the units to take now.
-- ARGV[4..6]: tokens: the same three figures.
-- The client never asks for more than a window holds (it takes a larger request in pieces).
--
-- Answers 0 when both were taken, else the milliseconds to wait before asking again (nothing
-- taken): until enough of the oldest grants have left the window.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- Drops the grants that left the window; answers the units still in it.
local function trim(log, sum, window)
  local horizon = string.format('%d', now - window)
  local gone = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', log, '-inf', horizon)) do
    gone = gone + tonumber(string.match(member, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', horizon)
  if redis.call('ZCARD', log) == 0 then
    redis.call('DEL', sum)
    return 0
  end
  if gone > 0 then
    return redis.call('DECRBY', sum, gone)
  end
  return tonumber(redis.call('GET', sum)) or 0
end

-- Microseconds until `units` more fit in the window (0: now).
local function wait_for(log, window, most, used, units)
  local excess = used + units - most
  if excess <= 0 then
    return 0
  end
  local grants = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = 1, #grants, 2 do
    excess = excess - tonumber(string.match(grants[i], ':(%d+)$'))
    if excess <= 0 then
      return tonumber(grants[i + 1]) + window - now
    end
  end
  return window
end

local limits = {
  { log = KEYS[1], sum = KEYS[2], window = tonumber(ARGV[1]), most = tonumber(ARGV[2]), units = tonumber(ARGV[3]) },
  { log = KEYS[3], sum = KEYS[4], window = tonumber(ARGV[4]), most = tonumber(ARGV[5]), units = tonumber(ARGV[6]) },
}

local wait = 0
for _, limit in ipairs(limits) do
  if limit.window > 0 then
    limit.used = trim(limit.log, limit.sum, limit.window)
    wait = math.max(wait, wait_for(limit.log, limit.window, limit.most, limit.used, limit.units))
  end
end
if wait > 0 then
  return math.max(1, math.ceil(wait / 1000))
end

-- Every key lives as long as its newest grant counts.
for _, limit in ipairs(limits) do
  if limit.window > 0 and limit.units > 0 then
    local seq = redis.call('INCR', KEYS[5])
    local ttl = math.ceil(limit.window / 1000) + 1
    redis.call('PEXPIRE', KEYS[5], ttl)
    redis.call('ZADD', limit.log, string.format('%d', now), string.format('%d:%d:%d', now, seq, limit.units))
    redis.call('INCRBY', limit.sum, limit.units)
    redis.call('PEXPIRE', limit.log, ttl)
    redis.call('PEXPIRE', limit.sum, ttl)
  end
end
return 0
