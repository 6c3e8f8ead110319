-- Shared prelude of every quota script (prepended by _redis.py before registering).
-- Key names always arrive in KEYS[]; times always arrive in ARGV from the client's clock
-- (no TIME call), so the scripts run on Redis 6.2, 7.x and Cluster alike.

-- The limit in force: the run-time override (ops, set_limit) wins over the default the
-- client passes in; a negative number means unlimited.
-- A settled reservation keeps this amount until its hold expires: a settle or release
-- repeated by a client retry then changes nothing.
local SETTLED = -1
local SETTLED_MARKER_SECONDS = 300

local function effective_limit(limit_key, default_limit)
  return tonumber(redis.call('GET', limit_key)) or tonumber(default_limit)
end

-- Give back `amount` reserved tokens; the counter disappears at zero (DECRBY keeps TTL).
local function unreserve(reserved_key, amount)
  local left = redis.call('DECRBY', reserved_key, amount)
  if left <= 0 then
    redis.call('DEL', reserved_key)
    return 0
  end
  return left
end

-- Drop reservations whose hold ran out (a process died before settling), at most
-- `batch` per call so one call never blocks the server for long. Returns the reserved
-- total afterwards.
local function purge(res_key, amount_key, reserved_key, now, batch)
  local expired = redis.call('ZRANGEBYSCORE', res_key, '-inf', now, 'LIMIT', 0, batch)
  if #expired > 0 then
    local freed = 0
    for _, id in ipairs(expired) do
      local amount = tonumber(redis.call('HGET', amount_key, id)) or 0
      if amount > 0 then -- settled markers hold nothing
        freed = freed + amount
      end
    end
    redis.call('ZREM', res_key, unpack(expired))
    redis.call('HDEL', amount_key, unpack(expired))
    if freed > 0 then
      return unreserve(reserved_key, freed)
    end
  end
  return tonumber(redis.call('GET', reserved_key)) or 0
end

-- The reply of reserve, settle and status: one line "admitted used reserved limit
-- [crossed threshold indices...]". redis-py reads a bulk string in one step but an array
-- element by element; this halves the client's cost of reading the reply. '%d' keeps
-- integers above 1e14 exact (tostring would print them as 1e+15).
local function counts_reply(admitted, used, reserved, limit, crossed)
  local line = string.format('%d %d %d %d', admitted, used, reserved, limit)
  if crossed and #crossed > 0 then
    line = line .. ' ' .. table.concat(crossed, ' ')
  end
  return line
end
