-- hydrate v1: rebuild a tenant's balance (and this month's cap counters) from the book
-- (PostgreSQL) after the store lost them. Writes only while the balance hash is still absent, so
-- instances hydrating the same tenant at once write it once; the others answer ALREADY_PRESENT.
-- Open reservations are not in the book (they moved no money), so reserved starts at 0. A month
-- counter is written only if it is absent too (one that survived holds open reservations).
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  creditedMicro   integer micro-credits, 0 .. 2^52 - 1: every grant the book holds
-- ARGV[2]  committedMicro  integer micro-credits, 0 .. 2^52 - 1: every settled charge the book holds
-- ARGV[3]  period          the UTC month "YYYYMM" the month figures are for, or "" (none written)
-- ARGV[4]  monthCommittedMicro  integer micro-credits, 0 .. 2^52 - 1: the tenant's charges in period
-- ARGV[5]  grantCount      n, integer 0 .. 10^6
-- ARGV[6 .. 5+2n]  grantId, amountMicro pairs: the grants counted in creditedMicro
--          ([A-Za-z0-9_-]{1,64}, 1 .. 10^15), recorded as applied so credit answers ALREADY_APPLIED
-- ARGV[6+2n ..]    keyId, committedMicro pairs: each API key's charges in period
--          ([A-Za-z0-9_-]{1,64}, 0 .. 2^52 - 1)
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

local function ident(value)
  return type(value) == 'string' and #value >= 1 and #value <= 64 and string.match(value, '^[%w_%-]+$') ~= nil
end

local credited = int(ARGV[1], 0, MAX_BALANCE)
if not credited then return {'INVALID_INPUT', 'creditedMicro'} end
local committed = int(ARGV[2], 0, MAX_BALANCE)
if not committed then return {'INVALID_INPUT', 'committedMicro'} end
local period = ARGV[3]
if period ~= '' and not string.match(period, '^%d%d%d%d%d%d$') then return {'INVALID_INPUT', 'period'} end
local monthCommitted = int(ARGV[4], 0, MAX_BALANCE)
if not monthCommitted then return {'INVALID_INPUT', 'monthCommittedMicro'} end
local grantCount = int(ARGV[5], 0, 1000000)
if not grantCount or 5 + 2 * grantCount > #ARGV then return {'INVALID_INPUT', 'grantCount'} end
local keysFrom = 6 + 2 * grantCount
if (#ARGV - keysFrom + 1) % 2 ~= 0 then return {'INVALID_INPUT', 'keys'} end
for i = 6, keysFrom - 1, 2 do
  if not ident(ARGV[i]) then return {'INVALID_INPUT', 'grantId'} end
  if not int(ARGV[i + 1], 1, MAX_AMOUNT) then return {'INVALID_INPUT', 'amountMicro'} end
end
for i = keysFrom, #ARGV, 2 do
  if not ident(ARGV[i]) then return {'INVALID_INPUT', 'keyId'} end
  if not int(ARGV[i + 1], 0, MAX_BALANCE) then return {'INVALID_INPUT', 'keyCommittedMicro'} end
end

local balKey = base .. ':bal'
if redis.call('EXISTS', balKey) == 1 then return {'ALREADY_PRESENT'} end
redis.call('HSET', balKey, 'credited', credited, 'committed', committed, 'reserved', 0)
-- The book is the authority on which grants are applied: any record left without its balance goes.
local grantsKey = base .. ':grants'
redis.call('DEL', grantsKey)
for i = 6, keysFrom - 1, 2 do
  redis.call('HSET', grantsKey, ARGV[i], ARGV[i + 1])
end
-- Month counters, as admit keeps them (400 days), only where absent.
local function month(key, value)
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'committed', value, 'reserved', 0)
  redis.call('PEXPIRE', key, 400 * 86400000)
end
if period ~= '' then
  month(base .. ':m:' .. period, monthCommitted)
  for i = keysFrom, #ARGV, 2 do
    month(base .. ':km:' .. ARGV[i] .. ':' .. period, int(ARGV[i + 1], 0, MAX_BALANCE))
  end
end
return {'HYDRATED'}
