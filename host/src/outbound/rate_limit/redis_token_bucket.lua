-- GCRA (a token bucket) for a limit's requests and tokens at once, on Redis's own clock (TIME):
-- every process that shares the keys sees the same clock, whatever its own says.
--
-- KEYS[1], KEYS[2]: the theoretical arrival time (TAT, microseconds) of the requests bucket and
--   of the tokens bucket.
-- ARGV[1..3]: requests: microseconds per request (0: no request limit), the bucket's size in
--   requests, the requests to take now.
-- ARGV[4..6]: tokens: the same three figures.
-- The client never asks for more than a bucket holds (it takes a larger request in pieces).
--
-- Answers 0 when both were taken, else the milliseconds to wait before asking again (nothing
-- taken). Nothing is reserved while a client waits: the first to ask when there is room gets it.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- The bucket's new TAT if `units` are taken, and how long (microseconds) until they fit.
local function plan(key, per_unit, size, units)
  if per_unit <= 0 then
    return nil, 0
  end
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + units * per_unit
  return new_tat, new_tat - now - size * per_unit
end

local requests_tat, requests_wait = plan(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
local tokens_tat, tokens_wait = plan(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))

-- Below a microsecond is the rounding of a fractional interval, not a wait.
local wait = math.max(requests_wait, tokens_wait)
if wait >= 1 then
  return math.max(1, math.ceil(wait / 1000))
end

-- A TAT matters only until it passes (then the bucket is full anyway): it expires then.
local function store(key, tat, units)
  if tat and units > 0 then
    redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
end
store(KEYS[1], requests_tat, tonumber(ARGV[3]))
store(KEYS[2], tokens_tat, tonumber(ARGV[6]))
return 0
