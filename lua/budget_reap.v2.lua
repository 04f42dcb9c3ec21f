-- budget_reap v2: release reservations whose deadline has passed (a stream that never settled).
-- Claims each one by the state change open -> reaped, so finalize and the reaper never both
-- release the same reservation.
-- New in v2: a free (zero) reservation of admit v2 releases nothing and writes no counter (v1
-- sent HINCRBY -0, which Redis refuses).
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  nowMs     integer ms since the epoch; reservations with deadline <= nowMs are reaped
-- ARGV[2]  maxCount  integer 1 .. 1000, the most reservations released by one call
--
-- returns {"REAPED", count, releasedMicro, driftMicro} | {"INVALID_INPUT", field}

local base = KEYS[1]
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

local now = int(ARGV[1], 1, MAX_NOW)
if not now then return {'INVALID_INPUT', 'nowMs'} end
local maxCount = int(ARGV[2], 1, 1000)
if not maxCount then return {'INVALID_INPUT', 'maxCount'} end

local indexKey = base .. ':resz'
local due = redis.call('ZRANGEBYSCORE', indexKey, '-inf', now, 'LIMIT', 0, maxCount)
local count, released, drift = 0, 0, 0
for _, resId in ipairs(due) do
  local resKey = base .. ':res:' .. resId
  local r = redis.call('HMGET', resKey, 'state', 'amount', 'period', 'keyId')
  if r[1] == 'open' then
    local amount = tonumber(r[2])
    local counters = {base .. ':bal', base .. ':m:' .. r[3], base .. ':km:' .. r[4] .. ':' .. r[3]}
    if amount > 0 then
      for _, key in ipairs(counters) do
        local reserved = tonumber(redis.call('HGET', key, 'reserved')) or 0
        if reserved < amount then
          drift = drift + (amount - reserved)
          redis.call('HSET', key, 'reserved', 0)
        else
          redis.call('HINCRBY', key, 'reserved', -amount)
        end
      end
    end
    redis.call('HSET', resKey, 'state', 'reaped', 'reapedAt', now)
    redis.call('PEXPIRE', resKey, RETAIN_MS)
    count = count + 1
    released = released + amount
  end
  redis.call('ZREM', indexKey, resId)
end
if drift > 0 then
  redis.log(redis.LOG_WARNING, 'ACCOUNTING_DRIFT base=' .. base .. ' reaper amount=' .. drift)
end
return {'REAPED', count, released, drift}
