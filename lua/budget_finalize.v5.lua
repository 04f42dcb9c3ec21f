-- budget_finalize v5: settle a reservation exactly once. Cancel is finalize with actualCost 0.
-- Exactly one of finalize, cancel and the reaper claims an open reservation: the claim is the
-- state change open -> finalized|reaped inside one atomic script.
-- New in v5: the settling gateway's outbox acknowledgements ride along (ARGV[11..]): the entries
-- it has written to PostgreSQL since, named as outbox_ack v1 names them and removed by its rules
-- (an entry only when its reservation id matches too, each charge taken off `outbox` once, the
-- field clamped at 0 and never written while the balance hash is absent), in every reply but
-- INVALID_INPUT and HYDRATE (nothing written: the caller calls again with them), so a busy
-- tenant's acknowledgements cost no call of their own. A reservation is released from each
-- counter by one HINCRBY whose answer shows any drift (v4 read the field first).
-- Since v4, the outbox: a settlement (FINALIZED or LATE_FINALIZE, a charge of 0 included) that
-- names the spend row's key appends one entry holding everything the row needs to the tenant's
-- stream {t:<id>}:outbox (never trimmed; outbox_read / outbox_ack drain it into PostgreSQL) and
-- adds its charge to the `outbox` field of the balance hash (charges waiting in the stream), and
-- answers the entry's id (the settling gateway writes the row and acknowledges that entry). So no
-- settled charge lives only in a gateway's memory. A cancel (keyId "") appends nothing.
-- Since v4, recovery (ARGV[9], the request path and the settlement job only): a charge for a
-- reservation the store no longer knows (absent: lost with the store's data while its request
-- ran; a `cancelled` tombstone stays refused) is still billed, a charge of 0 recorded as such. While
-- the balance hash is absent and there is a charge, it answers HYDRATE (nothing written: the caller rebuilds the balance from the book and calls
-- again); then it commits the charge to the balance and this month's counters as a late finalize
-- would, appends the outbox entry and records the reservation as finalized, so a retry answers
-- ALREADY_FINALIZED: the charge is made exactly once.
-- Since v3, a cancel of a reservation id that does not exist (yet) writes a tombstone, the
-- reservation hash in state `cancelled` kept for RETAIN_MS, which admit v4 refuses: a gateway that
-- cancels after its admit timed out wins even when the late admit reaches Redis afterwards.
-- Since v2, for the free (zero) reservations of admit v2: releasing 0 writes nothing; the
-- idempotency key is freed by a cancel (actualCost 0), not by every settlement that charges 0, so
-- a settled free request keeps it as a paid one does; and a late finalize that charges nothing is
-- never reported as an overspend.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  reservationId     [A-Za-z0-9_-]{1,64}
-- ARGV[2]  actualCostMicro   integer micro-credits, 0 .. 10^15; a free request's notional cost
-- ARGV[3]  actualTokens      integer tokens, 0 .. 10^9 (corrects the key's tokens-per-day counter)
-- ARGV[4]  nowMs             integer ms since the epoch, below 2^47 (the entry's settledAtMs)
-- ARGV[5]  keyId             the spend row's API key, [A-Za-z0-9_-]{1,64} (the reservation may
--                            hold a shared limit subject), or "" for a cancel: no outbox entry;
--                            "" is refused with an actualCostMicro above 0
-- ARGV[6]  promptTokens      integer tokens, 0 .. 10^9
-- ARGV[7]  completionTokens  integer tokens, 0 .. 10^9
-- ARGV[8]  free              "1": a free (sandbox) request, recorded at actualCostMicro and
--                            charged 0 (refused for a reservation that reserved money); else "0"
-- ARGV[9]  recoverPool       "" or absent: no recovery (an unknown id is refused, as before); else
--                            the request's pool, [A-Za-z0-9_-]{1,64}: recovery mode (above)
-- ARGV[10] period            recovery only: the UTC month of nowMs, "YYYYMM" (the counters charged);
--                            "" (or absent) otherwise
-- ARGV[11 .. 10 + 2n]  0 .. 1000 outbox entries to acknowledge (written to PostgreSQL): pairs of
--                      an entry id "<ms>-<seq>" (at most 19 digits each) and its reservation id
--
-- outbox entry fields: reservationId keyId pool promptTokens completionTokens costMicro
--   (what the row records: the charge, or a free request's notional cost) chargedMicro free (0|1)
--   settledAtMs
--
-- returns (outboxEntryId: the id of the entry appended, "" for a cancel, which appends none)
--   {"FINALIZED", chargedMicro, releasedMicro, driftMicro, outboxEntryId}
--       charged = min(actual, reserved amount); the rest of the reservation is released
--   {"LATE_FINALIZE", chargedMicro, overspend (0|1), driftMicro, outboxEntryId}
--       the reaper released it first: charge min(actual, amount) anyway; overspend = 1 when that
--       charge is above 0 and leaves committed + reserved above credited
--   {"RECOVERED", chargedMicro, overspend (0|1), 0, outboxEntryId}
--       recovery mode, an unknown id: charged actualCostMicro (the caller capped it by the
--       reservation it made; 0 for a free request), overspend as for LATE_FINALIZE
--   {"HYDRATE"}   recovery mode, an unknown id, a charge above 0, and the balance hash is absent:
--       nothing written
--   {"ALREADY_FINALIZED", chargedMicro}   (no change, no outbox entry; the first charge)
--   {"CANCELLED_BEFORE_ADMIT"}   a cancel of an unknown id (tombstone written) or of a tombstone
-- A cancel (actualCostMicro 0) frees the reservation's idempotency key.
--   {"INVALID_INPUT", field}   nothing written, acknowledgements included ("ack": a bad pair);
--       (field "reservationId" also when a charge names an unknown id
--       outside recovery mode, or a tombstone; "free" for a free settlement of a reservation that
--       reserved money; "pool" / "period" for a bad recovery argument)
-- driftMicro > 0: `reserved` would have gone negative and was clamped to 0 (logged ACCOUNTING_DRIFT).
-- Every figure settles into the reservation's own period, whatever month nowMs is in.

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
local MAX_COUNT = 1000000000
local MAX_NOW = 140737488355328
local RETAIN_MS = 7 * 86400000

-- Canonical decimal integers only: no "-0", no leading zeros, no "+", spaces, hex or exponents
-- (a value Redis would later refuse as an argument must fail here, before any write).
local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local function ident(value)
  return type(value) == 'string' and #value >= 1 and #value <= 64 and string.match(value, '^[%w_%-]+$') ~= nil
end

local resId = ARGV[1]
if not ident(resId) then return {'INVALID_INPUT', 'reservationId'} end
local actual = int(ARGV[2], 0, MAX_AMOUNT)
if not actual then return {'INVALID_INPUT', 'actualCostMicro'} end
local actualTokens = int(ARGV[3], 0, MAX_COUNT)
if not actualTokens then return {'INVALID_INPUT', 'actualTokens'} end
local now = int(ARGV[4], 1, MAX_NOW)
if not now then return {'INVALID_INPUT', 'nowMs'} end
local rowKeyId = ARGV[5]
if rowKeyId ~= '' and not ident(rowKeyId) then return {'INVALID_INPUT', 'keyId'} end
if rowKeyId == '' and actual > 0 then return {'INVALID_INPUT', 'keyId'} end
local promptTokens = int(ARGV[6], 0, MAX_COUNT)
if not promptTokens then return {'INVALID_INPUT', 'promptTokens'} end
local completionTokens = int(ARGV[7], 0, MAX_COUNT)
if not completionTokens then return {'INVALID_INPUT', 'completionTokens'} end
local free = ARGV[8]
if free ~= '0' and free ~= '1' then return {'INVALID_INPUT', 'free'} end
local recoverPool = ARGV[9] or ''
if recoverPool ~= '' and not ident(recoverPool) then return {'INVALID_INPUT', 'pool'} end
local recoverPeriod = ARGV[10] or ''
if recoverPool ~= '' and not string.match(recoverPeriod, '^%d%d%d%d%d%d$') then
  return {'INVALID_INPUT', 'period'}
end
if #ARGV > 10 and (#ARGV > 2010 or #ARGV % 2 ~= 0) then return {'INVALID_INPUT', 'ack'} end
for i = 11, #ARGV, 2 do
  local ms, seq = string.match(ARGV[i], '^(%d+)%-(%d+)$')
  if not ms or #ms > 19 or #seq > 19 or not ident(ARGV[i + 1]) then return {'INVALID_INPUT', 'ack'} end
end

local balKey = base .. ':bal'
local stream = base .. ':outbox'
-- The acknowledgements (outbox_ack v1's rules): answers the charges of the entries deleted now.
local function acknowledge()
  local released = 0
  for i = 11, #ARGV, 2 do
    local found = redis.call('XRANGE', stream, ARGV[i], ARGV[i])
    if #found > 0 then
      local fields = found[1][2]
      local charged, entryRes = 0, nil
      for f = 1, #fields, 2 do
        if fields[f] == 'chargedMicro' then charged = tonumber(fields[f + 1]) or 0 end
        if fields[f] == 'reservationId' then entryRes = fields[f + 1] end
      end
      if entryRes == ARGV[i + 1] then
        released = released + charged
        redis.call('XDEL', stream, ARGV[i])
      end
    end
  end
  return released
end
-- The acknowledged charges leave `outbox` (clamped at 0; an absent field is left alone), where
-- the settlement does not write the balance itself.
local function acknowledgeAlone()
  local released = acknowledge()
  if released > 0 then
    local held = tonumber(redis.call('HGET', balKey, 'outbox'))
    if held then
      local left = held - released
      if left < 0 then left = 0 end
      redis.call('HSET', balKey, 'outbox', string.format('%.0f', left))
    end
  end
end

local resKey = base .. ':res:' .. resId
local r = redis.call('HMGET', resKey, 'state', 'amount', 'tokens', 'period', 'keyId', 'day', 'charged', 'idem',
  'pool')
local state = r[1]
if not state and recoverPool ~= '' and rowKeyId ~= '' then
  -- Recovery: the reservation was lost with the store's data; the delivered tokens are billed (a
  -- charge of 0, e.g. an upstream that never answered, is recorded as such, never tombstoned).
  local charge = actual
  if free == '1' then charge = 0 end
  if charge > 0 and redis.call('EXISTS', balKey) == 0 then return {'HYDRATE'} end
  acknowledgeAlone()
  local entryId = redis.call('XADD', stream, '*', 'reservationId', resId, 'keyId', rowKeyId,
    'pool', recoverPool, 'promptTokens', ARGV[6], 'completionTokens', ARGV[7],
    'costMicro', string.format('%.0f', actual), 'chargedMicro', string.format('%.0f', charge), 'free', free,
    'settledAtMs', ARGV[4])
  -- A paid key is its own limit subject (only sandbox keys share one, and they are charged 0).
  if charge > 0 then
    redis.call('HINCRBY', balKey, 'outbox', charge)
    for _, key in ipairs({balKey, base .. ':m:' .. recoverPeriod, base .. ':km:' .. rowKeyId .. ':' .. recoverPeriod}) do
      redis.call('HINCRBY', key, 'committed', charge)
    end
  end
  redis.call('HSET', resKey, 'state', 'finalized', 'charged', charge, 'finalizedAt', now, 'keyId', rowKeyId,
    'pool', recoverPool, 'period', recoverPeriod, 'recovered', 1)
  redis.call('PEXPIRE', resKey, RETAIN_MS)
  redis.log(redis.LOG_WARNING, 'RESERVATION_RECOVERED base=' .. base .. ' reservation=' .. resId .. ' charged=' .. string.format('%.0f', charge))
  local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved')
  local overspend = 0
  if charge > 0 and (tonumber(bal[2]) or 0) + (tonumber(bal[3]) or 0) > (tonumber(bal[1]) or 0) then
    overspend = 1
  end
  return {'RECOVERED', charge, overspend, 0, entryId}
end
if not state or state == 'cancelled' then
  if actual > 0 then return {'INVALID_INPUT', 'reservationId'} end
  acknowledgeAlone()
  if not state then
    redis.call('HSET', resKey, 'state', 'cancelled', 'finalizedAt', now)
    redis.call('PEXPIRE', resKey, RETAIN_MS)
  end
  return {'CANCELLED_BEFORE_ADMIT'}
end
if state == 'finalized' then
  acknowledgeAlone()
  return {'ALREADY_FINALIZED', tonumber(r[7]) or 0}
end

local amount, estimate, period, keyId, day = tonumber(r[2]), tonumber(r[3]), r[4], r[5], r[6]
if free == '1' and amount > 0 then return {'INVALID_INPUT', 'free'} end
local charge = math.min(actual, amount)
local released = acknowledge()

-- The outbox entry first: should it fail, nothing else has been written.
local entryId = ''
local outboxAdded = 0
if rowKeyId ~= '' then
  local cost = charge
  if free == '1' then cost = actual end
  entryId = redis.call('XADD', stream, '*', 'reservationId', resId, 'keyId', rowKeyId, 'pool', r[9] or '',
    'promptTokens', ARGV[6], 'completionTokens', ARGV[7], 'costMicro', string.format('%.0f', cost),
    'chargedMicro', string.format('%.0f', charge), 'free', free, 'settledAtMs', ARGV[4])
  outboxAdded = charge
end

-- The reservation released from each counter (an open one; a free one, amount 0, reserved
-- nothing) and the charge committed; on the balance the outbox moves by the charge appended and
-- the charges acknowledged.
local drift = 0
local counters = {balKey, base .. ':m:' .. period, base .. ':km:' .. keyId .. ':' .. period}
for _, key in ipairs(counters) do
  if state == 'open' and amount > 0 then
    local left = redis.call('HINCRBY', key, 'reserved', -amount)
    if left < 0 then
      drift = drift - left
      redis.call('HSET', key, 'reserved', 0)
    end
  end
  redis.call('HINCRBY', key, 'committed', charge)
end
if released > 0 then
  local held = tonumber(redis.call('HGET', balKey, 'outbox'))
  if held then
    local left = held - released
    if left < 0 then left = 0 end
    redis.call('HSET', balKey, 'outbox', string.format('%.0f', left + outboxAdded))
  elseif outboxAdded > 0 then
    redis.call('HINCRBY', balKey, 'outbox', outboxAdded)
  end
elseif outboxAdded > 0 then
  redis.call('HINCRBY', balKey, 'outbox', outboxAdded)
end
if state == 'open' then redis.call('ZREM', base .. ':resz', resId) end
if drift > 0 then
  redis.log(redis.LOG_WARNING, 'ACCOUNTING_DRIFT base=' .. base .. ' reservation=' .. resId .. ' amount=' .. drift)
end

-- Correct the key's tokens-per-day counter from the estimate to the actual count.
local tpdKey = base .. ':tpd:' .. keyId .. ':' .. day
local used = tonumber(redis.call('GET', tpdKey))
if used then
  local corrected = used + actualTokens - estimate
  if corrected < 0 then corrected = 0 end
  if corrected ~= used then redis.call('SET', tpdKey, corrected, 'KEEPTTL') end
end

redis.call('HSET', resKey, 'state', 'finalized', 'charged', charge, 'finalizedAt', now)
redis.call('PEXPIRE', resKey, RETAIN_MS)
-- A cancelled request may be retried with the same idempotency key.
local idem = r[8]
if actual == 0 and idem and idem ~= '' then
  local idemKey = base .. ':idem:' .. keyId .. ':' .. idem
  if redis.call('HGET', idemKey, 'res') == resId then redis.call('DEL', idemKey) end
end
if state == 'open' then return {'FINALIZED', charge, amount - charge, drift, entryId} end

local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved')
local overspend = 0
if charge > 0 and (tonumber(bal[2]) or 0) + (tonumber(bal[3]) or 0) > (tonumber(bal[1]) or 0) then
  overspend = 1
end
return {'LATE_FINALIZE', charge, overspend, drift, entryId}
