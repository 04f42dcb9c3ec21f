-- snapshot v1: a tenant's balance figures, read in one atomic step.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- returns {"SNAPSHOT", creditedMicro, committedMicro, reservedMicro, availableMicro}
--         available = credited - committed - reserved (negative only after an overspend)

local bal = redis.call('HMGET', KEYS[1] .. ':bal', 'credited', 'committed', 'reserved')
local credited, committed, reserved = tonumber(bal[1]) or 0, tonumber(bal[2]) or 0, tonumber(bal[3]) or 0
return {'SNAPSHOT', credited, committed, reserved, credited - committed - reserved}
