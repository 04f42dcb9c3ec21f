-- budget_event v1: the budget thresholds (80 %, 100 %) a tenant's scopes have reached, each
-- reported ONCE per (scope, tenant or key, threshold, period) however many instances ask: the
-- report is the SET NX of a marker in the same atomic step as the read, so exactly one caller
-- sees it. Run after a settlement that charged something; "used" is committed (charged) spend.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  reservationId          [A-Za-z0-9_-]{1,64}, a settled reservation: its period and key are
--                                 the ones checked (a request admitted in one month and settled in
--                                 the next counts in the month it was admitted in, as finalize does)
-- ARGV[2]  tenantMonthlyCapMicro  integer micro-credits, -1 (no cap) .. 10^15
-- ARGV[3]  keyMonthlyCapMicro     integer micro-credits, -1 (no cap) .. 10^15
--
-- Scopes, in this order, and their periods:
--   balance         committed / credited; period "credited:<creditedMicro>": a top-up starts a new
--                   period, so the thresholds of the new, larger balance can be crossed again
--   tenant_monthly  the tenant's committed this month / its cap; period "YYYYMM"
--   key_monthly     the key's committed this month / its cap; period "YYYYMM"
-- A scope without credits, or with no cap or a cap of 0, has no thresholds. A marker lives 400
-- days (as the monthly counters do), far past the end of its period.
--
-- returns
--   {"THRESHOLDS", count, then for each threshold reached for the first time (80 before 100):
--    scope, thresholdPercent, period, usedMicro, limitMicro}
--   {"INVALID_INPUT", field}   (field "reservationId" also when it is unknown)

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
local MARKER_MS = 400 * 86400000

-- Canonical decimal integers only: no "-0", no leading zeros, no "+", spaces, hex or exponents
-- (a value Redis would later refuse as an argument must fail here, before any write).
local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local resId = ARGV[1]
if type(resId) ~= 'string' or #resId < 1 or #resId > 64 or not string.match(resId, '^[%w_%-]+$') then
  return {'INVALID_INPUT', 'reservationId'}
end
local tenantCap = int(ARGV[2], -1, MAX_AMOUNT)
if not tenantCap then return {'INVALID_INPUT', 'tenantMonthlyCapMicro'} end
local keyCap = int(ARGV[3], -1, MAX_AMOUNT)
if not keyCap then return {'INVALID_INPUT', 'keyMonthlyCapMicro'} end

local r = redis.call('HMGET', base .. ':res:' .. resId, 'period', 'keyId')
local period, keyId = r[1], r[2]
if not period or not keyId then return {'INVALID_INPUT', 'reservationId'} end

-- 80 %: used * 5 >= limit * 4, written as used >= 4 * (limit - used) so that no intermediate
-- figure can pass 2^53 (a balance may be up to 2^52; times 4 is exact in a double).
local function reached(used, limit, percent)
  if used >= limit then return true end
  return percent == 80 and used >= 4 * (limit - used)
end

local out = {'THRESHOLDS', 0}
local function check(scope, marker, periodName, used, limit)
  if limit <= 0 then return end
  for _, percent in ipairs({80, 100}) do
    if reached(used, limit, percent)
      and redis.call('SET', marker .. ':' .. percent, '1', 'NX', 'PX', MARKER_MS) then
      out[2] = out[2] + 1
      for _, value in ipairs({scope, percent, periodName, used, limit}) do out[#out + 1] = value end
    end
  end
end

local bal = redis.call('HMGET', base .. ':bal', 'credited', 'committed')
-- The stored digits name the period: tostring of a number past 10^14 would print an exponent.
local creditedText = bal[1] or '0'
check('balance', base .. ':bev:bal:' .. creditedText, 'credited:' .. creditedText, tonumber(bal[2]) or 0,
  tonumber(creditedText) or 0)
if tenantCap > 0 then
  local used = tonumber(redis.call('HGET', base .. ':m:' .. period, 'committed')) or 0
  check('tenant_monthly', base .. ':bev:m:' .. period, period, used, tenantCap)
end
if keyCap > 0 then
  local used = tonumber(redis.call('HGET', base .. ':km:' .. keyId .. ':' .. period, 'committed')) or 0
  check('key_monthly', base .. ':bev:km:' .. keyId .. ':' .. period, period, used, keyCap)
end
return out
