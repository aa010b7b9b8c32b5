-- Frees a request cache lock only if ARGV[1] still owns it: a lock that expired and was taken
-- by another process is that process's now.
--
-- KEYS[1]: the lock; ARGV[1]: the owner id it was taken with. Answers 1 when freed, else 0.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
