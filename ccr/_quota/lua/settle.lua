-- Replace a reservation by the real usage and report thresholds crossed for the first
-- time today, in one atomic step (no extra read on the request path).
-- KEYS: used, reserved, res, resamt, limit, warned (set of thresholds already fired)
-- ARGV: reservation id, used tokens, default limit (-1 = unlimited), now, expire at,
--       purge batch, thresholds... (fractions of the limit, ascending)
-- Returns "1 used reserved limit [index of each newly crossed threshold (1-based)...]"
local id = ARGV[1]
local limit = effective_limit(KEYS[5], ARGV[3])
local reserved = purge(KEYS[3], KEYS[4], KEYS[2], ARGV[4], ARGV[6])

-- An expired or unknown reservation frees nothing, but its tokens were still spent.
local held = tonumber(redis.call('HGET', KEYS[4], id))
if held == SETTLED then
  -- A repeated settle (the client retried after a dropped connection): count nothing twice.
  return counts_reply(1, tonumber(redis.call('GET', KEYS[1])) or 0, reserved, limit)
end
if held then
  reserved = unreserve(KEYS[2], held)
else
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + SETTLED_MARKER_SECONDS, id)
end
-- The entry stays as a "settled" marker until its hold would have expired (a few minutes
-- for one that had already expired), so a settle or release repeated by a retry is a no-op.
redis.call('HSET', KEYS[4], id, SETTLED)
redis.call('EXPIREAT', KEYS[3], ARGV[5])
redis.call('EXPIREAT', KEYS[4], ARGV[5])

local used = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[5])

local crossed = {}
if limit >= 0 then
  for i = 7, #ARGV do
    if used >= tonumber(ARGV[i]) * limit and redis.call('SADD', KEYS[6], ARGV[i]) == 1 then
      crossed[#crossed + 1] = i - 6
    end
  end
  if #crossed > 0 then
    redis.call('EXPIREAT', KEYS[6], ARGV[5])
  end
end
return counts_reply(1, used, reserved, limit, crossed)
