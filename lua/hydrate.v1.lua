-- hydrate v1: rebuild a tenant's balance from the book (PostgreSQL) after the store lost it.
-- Writes only while the balance hash is still absent, so instances hydrating the same tenant at
-- once write it once; the others answer ALREADY_PRESENT. Open reservations are not in the book
-- (they moved no money), so reserved starts at 0.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  creditedMicro   integer micro-credits, 0 .. 2^52 - 1: every grant the book holds
-- ARGV[2]  committedMicro  integer micro-credits, 0 .. 2^52 - 1: every settled charge the book holds
-- ARGV[3..] grantId, amountMicro pairs: the grants counted in creditedMicro ([A-Za-z0-9_-]{1,64},
--          1 .. 10^15), recorded as applied so that credit answers ALREADY_APPLIED for them
--
-- returns {"HYDRATED"}          the balance hash was absent and now holds the book's figures
--       | {"ALREADY_PRESENT"}   the balance hash exists (another caller hydrated it): nothing written
--       | {"INVALID_INPUT", field}

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
local MAX_BALANCE = 4503599627370495

local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local credited = int(ARGV[1], 0, MAX_BALANCE)
if not credited then return {'INVALID_INPUT', 'creditedMicro'} end
local committed = int(ARGV[2], 0, MAX_BALANCE)
if not committed then return {'INVALID_INPUT', 'committedMicro'} end
if #ARGV % 2 ~= 0 then return {'INVALID_INPUT', 'grants'} end
for i = 3, #ARGV, 2 do
  local grantId = ARGV[i]
  if #grantId < 1 or #grantId > 64 or not string.match(grantId, '^[%w_%-]+$') then
    return {'INVALID_INPUT', 'grantId'}
  end
  if not int(ARGV[i + 1], 1, MAX_AMOUNT) then return {'INVALID_INPUT', 'amountMicro'} end
end

local balKey = base .. ':bal'
if redis.call('EXISTS', balKey) == 1 then return {'ALREADY_PRESENT'} end
redis.call('HSET', balKey, 'credited', credited, 'committed', committed, 'reserved', 0)
-- The book is the authority on which grants are applied: any record left without its balance goes.
local grantsKey = base .. ':grants'
redis.call('DEL', grantsKey)
for i = 3, #ARGV, 2 do
  redis.call('HSET', grantsKey, ARGV[i], ARGV[i + 1])
end
return {'HYDRATED'}
