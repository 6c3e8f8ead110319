-- Forget a workspace's day atomically: usage, reservations and fired warnings.
-- KEYS: used, reserved, res, resamt, warned
-- Returns the number of keys removed.
return redis.call('DEL', unpack(KEYS))
