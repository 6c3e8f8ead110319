-- Admit and hold an estimate, or refuse it: one atomic step on the request path.
-- KEYS: used, reserved, res (zset id -> hold until), resamt (hash id -> tokens), limit
-- ARGV: reservation id, tokens, default limit (-1 = unlimited), now, hold until,
--       expire at (unix seconds for the day keys), purge batch
-- Returns "admitted (0|1) used reserved limit (-1 = unlimited)" (see counts_reply)
local id = ARGV[1]
local tokens = tonumber(ARGV[2])
local limit = effective_limit(KEYS[5], ARGV[3])
local reserved = purge(KEYS[3], KEYS[4], KEYS[2], ARGV[4], ARGV[7])
local used = tonumber(redis.call('GET', KEYS[1])) or 0

if redis.call('HEXISTS', KEYS[4], id) == 1 then
  return counts_reply(1, used, reserved, limit) -- already held: never count one reservation twice
end
if limit >= 0 and used + reserved + tokens > limit then
  return counts_reply(0, used, reserved, limit)
end

redis.call('HSET', KEYS[4], id, tokens)
redis.call('ZADD', KEYS[3], ARGV[5], id)
reserved = redis.call('INCRBY', KEYS[2], tokens)
redis.call('EXPIREAT', KEYS[2], ARGV[6])
redis.call('EXPIREAT', KEYS[3], ARGV[6])
redis.call('EXPIREAT', KEYS[4], ARGV[6])
return counts_reply(1, used, reserved, limit)
