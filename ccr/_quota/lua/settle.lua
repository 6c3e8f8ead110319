-- Replace a reservation by the real usage and report thresholds crossed for the first
-- time today, in one atomic step (no extra read on the request path).
-- KEYS: used, reserved, res, resamt, limit, warned (set of thresholds already fired)
-- ARGV: reservation id, used tokens, default limit (-1 = unlimited), now, expire at,
--       purge batch, thresholds... (fractions of the limit, ascending)
-- Returns {1, used, reserved, limit, index of each newly crossed threshold (1-based)...}
local id = ARGV[1]
local limit = effective_limit(KEYS[5], ARGV[3])
local reserved = purge(KEYS[3], KEYS[4], KEYS[2], ARGV[4], ARGV[6])

-- An expired or unknown reservation frees nothing, but its tokens were still spent.
local held = tonumber(redis.call('HGET', KEYS[4], id))
if held then
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[3], id)
  reserved = unreserve(KEYS[2], held)
end

local used = redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[5])

local reply = {1, used, reserved, limit}
if limit >= 0 then
  local fired = false
  for i = 7, #ARGV do
    if used >= tonumber(ARGV[i]) * limit and redis.call('SADD', KEYS[6], ARGV[i]) == 1 then
      reply[#reply + 1] = i - 6
      fired = true
    end
  end
  if fired then
    redis.call('EXPIREAT', KEYS[6], ARGV[5])
  end
end
return reply
