-- pool_gate v1: a global token bucket per pool that protects an upstream across all tenants.
-- Its key carries the pool's hash tag, not a tenant's, so it runs as its own call after admit; a
-- denial means the caller cancels the fresh reservation at once.
--
-- KEYS[1]  pool base key  {p:<pool>}
-- ARGV[1]  tokens               integer units to take, 1 .. 10^9
-- ARGV[2]  capacity             integer bucket size, 1 .. 10^9
-- ARGV[3]  refillPerMinute      integer units per minute, 0 .. 10^9
-- ARGV[4]  nowMs                integer ms since the epoch
--
-- returns {"ALLOWED", remaining} | {"RATE_LIMITED", "pool", capacity, 0, retryAfterMs, resetAtMs}
--       | {"INVALID_INPUT", field}
-- Levels are stored multiplied by 60000, so the refill per millisecond is an exact integer.

local MAX_NOW = 140737488355328
local WINDOW_MS = 60000

-- Canonical decimal integers only: no "-0", no leading zeros, no "+", spaces, hex or exponents
-- (a value Redis would later refuse as an argument must fail here, before any write).
local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local tokens = int(ARGV[1], 1, 1000000000)
if not tokens then return {'INVALID_INPUT', 'tokens'} end
local capacity = int(ARGV[2], 1, 1000000000)
if not capacity then return {'INVALID_INPUT', 'capacity'} end
local refill = int(ARGV[3], 0, 1000000000)
if not refill then return {'INVALID_INPUT', 'refillPerMinute'} end
local now = int(ARGV[4], 1, MAX_NOW)
if not now then return {'INVALID_INPUT', 'nowMs'} end

local key = KEYS[1] .. ':bucket'
local scaledCap = capacity * WINDOW_MS
local state = redis.call('HMGET', key, 'level', 'ts')
local level, ts = scaledCap, now
if state[1] then
  level, ts = tonumber(state[1]), tonumber(state[2])
  if now > ts then
    level = math.min(scaledCap, level + (now - ts) * refill)
    ts = now
  end
end
local need = tokens * WINDOW_MS
if level < need then
  local retry = WINDOW_MS
  if refill > 0 and tokens <= capacity then retry = math.ceil((need - level) / refill) end
  if retry < 1 then retry = 1 end
  return {'RATE_LIMITED', 'pool', capacity, 0, retry, now + retry}
end
redis.call('HSET', key, 'level', level - need, 'ts', ts)
redis.call('PEXPIRE', key, 86400000)
return {'ALLOWED', math.floor((level - need) / WINDOW_MS)}
