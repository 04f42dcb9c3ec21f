-- rebase v1: set a tenant's balance to the book's figures ("the book wins": the conservation
-- check, docs/ledger.md "Conservation"), only if the balance still holds exactly the figures the
-- check read (compare-and-set); otherwise nothing is written and the check tries again later.
-- credited becomes the book's; committed the book's spent plus the outbox (charges settled in the
-- store that the drain has not yet written to the book); reserved (open reservations, not in the
-- book) and outbox are kept. The book's grants become the set of applied grant ids, so a credit
-- call still on its way answers ALREADY_APPLIED. The month cap counters are left as they are.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  expectedCreditedMicro   integer micro-credits, -(2^52 - 1) .. 2^52 - 1: credited as read
-- ARGV[2]  expectedCommittedMicro  integer micro-credits, -(2^52 - 1) .. 2^52 - 1: committed as read
-- ARGV[3]  expectedOutboxMicro     integer micro-credits, -(2^52 - 1) .. 2^52 - 1: outbox as read (0: absent)
-- ARGV[4]  creditedMicro   integer micro-credits, 0 .. 2^52 - 1: every grant the book holds
-- ARGV[5]  spentMicro      integer micro-credits, 0 .. 2^52 - 1: every settled charge the book holds
-- ARGV[6]  grantCount      n, integer 0 .. 10^6
-- ARGV[7 .. 6+2n]  grantId, amountMicro pairs: the grants counted in creditedMicro
--          ([A-Za-z0-9_-]{1,64}, 1 .. 10^15)
--
-- returns {"REBASED", creditedMicro, committedMicro, reservedMicro, outboxMicro}   the figures now
--       | {"CHANGED", creditedMicro, committedMicro, outboxMicro}   the figures found, not the ones
--         expected: nothing written
--       | {"ABSENT"}   the balance hash is absent (hydration rebuilds it): nothing written
--       | {"INVALID_INPUT", field}   (field "spentMicro" also when spent + outbox leaves 0 .. 2^52 - 1)

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
local MAX_BALANCE = 4503599627370495

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

local expectedCredited = int(ARGV[1], -MAX_BALANCE, MAX_BALANCE)
if not expectedCredited then return {'INVALID_INPUT', 'expectedCreditedMicro'} end
local expectedCommitted = int(ARGV[2], -MAX_BALANCE, MAX_BALANCE)
if not expectedCommitted then return {'INVALID_INPUT', 'expectedCommittedMicro'} end
local expectedOutbox = int(ARGV[3], -MAX_BALANCE, MAX_BALANCE)
if not expectedOutbox then return {'INVALID_INPUT', 'expectedOutboxMicro'} end
local credited = int(ARGV[4], 0, MAX_BALANCE)
if not credited then return {'INVALID_INPUT', 'creditedMicro'} end
local spent = int(ARGV[5], 0, MAX_BALANCE)
if not spent then return {'INVALID_INPUT', 'spentMicro'} end
local grantCount = int(ARGV[6], 0, 1000000)
if not grantCount or 6 + 2 * grantCount ~= #ARGV then return {'INVALID_INPUT', 'grantCount'} end
for i = 7, #ARGV, 2 do
  if not ident(ARGV[i]) then return {'INVALID_INPUT', 'grantId'} end
  if not int(ARGV[i + 1], 1, MAX_AMOUNT) then return {'INVALID_INPUT', 'amountMicro'} end
end

local balKey = base .. ':bal'
if redis.call('EXISTS', balKey) == 0 then return {'ABSENT'} end
local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved', 'outbox')
local nowCredited, nowCommitted = tonumber(bal[1]) or 0, tonumber(bal[2]) or 0
local reserved, outbox = tonumber(bal[3]) or 0, tonumber(bal[4]) or 0
if nowCredited ~= expectedCredited or nowCommitted ~= expectedCommitted or outbox ~= expectedOutbox then
  return {'CHANGED', nowCredited, nowCommitted, outbox}
end
local committed = spent + outbox
if committed < 0 or committed > MAX_BALANCE then return {'INVALID_INPUT', 'spentMicro'} end

redis.call('HSET', balKey, 'credited', credited, 'committed', committed)
-- The book is the authority on which grants are applied, as in hydrate.
local grantsKey = base .. ':grants'
redis.call('DEL', grantsKey)
for i = 7, #ARGV, 2 do
  redis.call('HSET', grantsKey, ARGV[i], ARGV[i + 1])
end
return {'REBASED', credited, committed, reserved, outbox}
