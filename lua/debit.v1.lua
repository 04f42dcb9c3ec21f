-- debit v1: lower a tenant's balance once per debit (a refunded payment: what the book took back).
-- The applied id is recorded in the same `:grants` hash credit uses, because hydrate.v1 and
-- rebase.v1 rewrite that hash from the book's list, which carries each refund's debit id: after the
-- store lost its data, a debit the book already holds answers ALREADY_APPLIED. When the balance
-- hash is absent it answers HYDRATE and writes nothing (the caller hydrates and debits again).
-- credited never goes below 0; available (credited - committed - reserved) may: open reservations
-- and settled charges stand, and a negative available only stops new admits.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  debitId      [A-Za-z0-9_-]{1,64}; the same debit is applied at most once
-- ARGV[2]  amountMicro  integer micro-credits, 1 .. 10^15
--
-- returns {"DEBITED", creditedMicro, availableMicro}
--       | {"ALREADY_APPLIED", creditedMicro, availableMicro}   (no change)
--       | {"HYDRATE"}   the balance hash is absent: nothing written
--       | {"INVALID_INPUT", field}   (field "amountMicro" also when credited would go below 0,
--         field "debitId" when the debit was applied before with another amount): nothing written

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000

local debitId = ARGV[1]
if type(debitId) ~= 'string' or #debitId < 1 or #debitId > 64 or not string.match(debitId, '^[%w_%-]+$') then
  return {'INVALID_INPUT', 'debitId'}
end
local raw = ARGV[2]
local amount = nil
if type(raw) == 'string' and #raw <= 17 and string.match(raw, '^[1-9]%d*$') then amount = tonumber(raw) end
if not amount or amount < 1 or amount > MAX_AMOUNT then return {'INVALID_INPUT', 'amountMicro'} end

local balKey = base .. ':bal'
if redis.call('EXISTS', balKey) == 0 then return {'HYDRATE'} end
local function figures()
  local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved')
  local credited = tonumber(bal[1]) or 0
  return credited, credited - (tonumber(bal[2]) or 0) - (tonumber(bal[3]) or 0)
end

local applied = redis.call('HGET', base .. ':grants', debitId)
if applied then
  -- The same debit id with another amount is a different debit under a reused id: refuse it.
  if tonumber(applied) ~= amount then return {'INVALID_INPUT', 'debitId'} end
  local credited, available = figures()
  return {'ALREADY_APPLIED', credited, available}
end
local before = figures()
if before - amount < 0 then return {'INVALID_INPUT', 'amountMicro'} end
redis.call('HSET', base .. ':grants', debitId, amount)
redis.call('HINCRBY', balKey, 'credited', -amount)
local credited, available = figures()
return {'DEBITED', credited, available}
