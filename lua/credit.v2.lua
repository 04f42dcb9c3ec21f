-- credit v2: raise a tenant's balance once per grant (a minted payment, an admin grant).
-- New in v2: when the tenant's balance hash is absent (an emptied store) it answers HYDRATE and
-- writes nothing, so a grant never creates a balance holding only itself: the caller rebuilds the
-- balance from the book (hydrate.v1, which also records the grant ids the book holds) and credits
-- again.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  grantId      [A-Za-z0-9_-]{1,64}; the same grant is applied at most once
-- ARGV[2]  amountMicro  integer micro-credits, 1 .. 10^15
--
-- returns {"CREDITED", creditedMicro, availableMicro}
--       | {"ALREADY_APPLIED", creditedMicro, availableMicro}   (no change)
--       | {"HYDRATE"}   the balance hash is absent: nothing written
--       | {"INVALID_INPUT", field}   (field "amountMicro" also when the balance would pass 2^52 - 1;
--         field "grantId" when the grant was applied before with another amount)

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
-- Balances stay below 2^52: some clients (ioredis's parser) read larger integer replies inexactly.
local MAX_BALANCE = 4503599627370495

local grantId = ARGV[1]
if type(grantId) ~= 'string' or #grantId < 1 or #grantId > 64 or not string.match(grantId, '^[%w_%-]+$') then
  return {'INVALID_INPUT', 'grantId'}
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

local applied = redis.call('HGET', base .. ':grants', grantId)
if applied then
  -- The same grant id with another amount is a different grant under a reused id: refuse it.
  if tonumber(applied) ~= amount then return {'INVALID_INPUT', 'grantId'} end
  local credited, available = figures()
  return {'ALREADY_APPLIED', credited, available}
end
local before = figures()
if before + amount > MAX_BALANCE then return {'INVALID_INPUT', 'amountMicro'} end
redis.call('HSET', base .. ':grants', grantId, amount)
redis.call('HINCRBY', balKey, 'credited', amount)
local credited, available = figures()
return {'CREDITED', credited, available}
