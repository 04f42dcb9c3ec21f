-- snapshot v2: a tenant's balance figures, read in one atomic step.
-- New in v2: the outbox (charges settled in the store that the drain has not yet written to the
-- book; part of committed) and whether the balance hash exists at all, for the conservation check.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- returns {"SNAPSHOT", creditedMicro, committedMicro, reservedMicro, availableMicro, outboxMicro, present}
--         available = credited - committed - reserved (negative only after an overspend);
--         outbox 0 when the field is absent; present 1 when the balance hash exists, 0 when it is
--         absent (every figure 0: an emptied store, which hydration rebuilds from the book)

local balKey = KEYS[1] .. ':bal'
local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved', 'outbox')
local credited, committed, reserved = tonumber(bal[1]) or 0, tonumber(bal[2]) or 0, tonumber(bal[3]) or 0
local outbox = tonumber(bal[4]) or 0
return {'SNAPSHOT', credited, committed, reserved, credited - committed - reserved, outbox, redis.call('EXISTS', balKey)}
