-- A request cache lookup that, on a miss, takes the key's lock in the same step: no other
-- process can slip between "there is no entry" and "I am the one sending".
--
-- KEYS[1]: the entry; KEYS[2]: its lock.
-- ARGV[1]: this attempt's owner id; ARGV[2]: the lock's life in milliseconds.
--
-- Answers the entry's bytes when there is one; else 1 when the lock was taken for ARGV[1],
-- 0 when another owner holds it.

local entry = redis.call('GET', KEYS[1])
if entry then
  return entry
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
