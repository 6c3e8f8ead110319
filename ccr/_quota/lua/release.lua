-- Give a failed or cancelled call's reservation back.
-- KEYS: reserved, res, resamt
-- ARGV: reservation id, now, purge batch
-- Returns 1 if the reservation was still held, else 0.
purge(KEYS[2], KEYS[3], KEYS[1], ARGV[2], ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
if not held or held == SETTLED then
  return 0 -- unknown, expired, or already settled: nothing is held
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
unreserve(KEYS[1], held)
return 1
