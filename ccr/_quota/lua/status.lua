-- Today's numbers, after purging expired reservations (hence a script, not a GET).
-- KEYS: used, reserved, res, resamt, limit
-- ARGV: default limit (-1 = unlimited), now, purge batch
-- Returns "1 used reserved limit" (see counts_reply)
local limit = effective_limit(KEYS[5], ARGV[1])
local reserved = purge(KEYS[3], KEYS[4], KEYS[2], ARGV[2], ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1])) or 0
return counts_reply(1, used, reserved, limit)
