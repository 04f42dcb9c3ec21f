-- admit v4: every rate-limit dimension and every budget scope decided in ONE atomic step.
-- A denial writes nothing anywhere; an admission charges every dimension and reserves the cost.
-- New in v4: a reservation id the caller already cancelled (budget_finalize v3's tombstone, written
-- when its cancel arrived before this admit, e.g. after the admit timed out) answers CANCELLED and
-- writes nothing, so a late admit never reserves what nobody will settle.
-- Since v3: when the tenant's balance hash is absent (an emptied store: restart, FLUSHALL,
-- failover, eviction) it answers HYDRATE and writes nothing: the caller rebuilds the balance from
-- the book (hydrate.v1) and asks again, so an absent balance is never read as zero credits.
-- Since v2: costMicro 0 admits a free request (a sandbox key, DESIGN.md §6): every rate-limit
-- dimension still counts it, but no budget scope is checked or reserved (a zero reservation
-- cannot take any scope past its limit), so a tenant without credits can use it. budget_finalize
-- then charges min(actual, 0) = 0 (v2 and budget_reap v2 release such a reservation cleanly).
--
-- KEYS[1]  tenant base key  {t:<tenantId>}  — every key touched is derived from it, so all share
--          one hash tag (one Redis Cluster slot).
-- ARGV[1]  tenantId          [A-Za-z0-9_-]{1,64}; must match KEYS[1]
-- ARGV[2]  keyId             [A-Za-z0-9_-]{1,64}
-- ARGV[3]  userId            same alphabet, or "" (no user dimension)
-- ARGV[4]  channelId         same alphabet, or "" (no channel dimension)
-- ARGV[5]  pool              same alphabet
-- ARGV[6]  idempotencyKey    same alphabet, or "" (none)
-- ARGV[7]  reservationId     same alphabet, chosen by the caller, unique
-- ARGV[8]  costMicro         integer micro-credits, 0 .. 10^15 (0: free, no budget scope applies)
-- ARGV[9]  tokenEstimate     integer tokens, 0 .. 10^9
-- ARGV[10] nowMs             integer ms since the epoch (the caller's clock), below 2^47
-- ARGV[11] ttlMs             reservation lifetime, integer ms, 1000 .. 86400000
-- ARGV[12] period            the UTC month of nowMs, "YYYYMM"
-- ARGV[13..21] limits, integers; -1 = not limited; counts up to 10^9, caps up to 10^15 micro-credits:
--          tenantRpm, userRpm, channelRpm, keyRpm (sliding 60 s windows, requests),
--          burstCapacity, burstRefillPerMinute (token bucket per user, or per tenant without one),
--          keyTpd (tokens per UTC day), tenantMonthlyCapMicro, keyMonthlyCapMicro
--
-- returns
--   {"ADMITTED", reservationId, balanceRemainingMicro, tenantMonthlyRemainingMicro (-1: no cap),
--    keyMonthlyRemainingMicro (-1: no cap), tightestDimension ("" if none limited),
--    tightestLimit, tightestRemaining, tightestResetAtMs, warningScope ("" or the first scope
--    at or past 80 % after this reservation; always "" for a free request)}
--   {"RATE_LIMITED", dimension, limit, 0, retryAfterMs, resetAtMs}
--     dimension: tenant | user | channel | burst | key_rpm | key_tpd — of the denying dimensions,
--     the one that frees up last; resetAtMs = nowMs + retryAfterMs, the first instant it can pass
--   {"BUDGET_EXCEEDED", scope, remainingMicro, limitMicro}   scope: balance | tenant_monthly | key_monthly
--     (never for a free request)
--   {"ALREADY_RESERVED", reservationId, amountMicro, state, balanceRemainingMicro,
--    tenantMonthlyRemainingMicro, keyMonthlyRemainingMicro}   (state: open | reaped | finalized)
--     for the same idempotency key of the same API key, or the same reservation id with the same
--     key and cost (a retry after a timeout); a cancelled reservation frees its idempotency key
--   {"CANCELLED"}   the reservation id was cancelled before this admit ran: nothing written
--   {"HYDRATE"}   the balance hash is absent: nothing written (hydrate.v1, then admit again)
--   {"INVALID_INPUT", field}
-- Order of checks: input, cancelled id, balance present, dimensions (in the order above), budget scopes (in order).

local base = KEYS[1]
local MAX_AMOUNT = 1000000000000000
-- 2^47 ms is the year 6429: times stay far below 2^52 even with a day added.
local MAX_NOW = 140737488355328
-- Counts (requests, tokens) stay below 10^9 so count x 60000 is an exact integer below 2^52.
local MAX_COUNT = 1000000000
local WINDOW_MS = 60000
local DAY_MS = 86400000
local RETAIN_MS = 7 * DAY_MS

-- Canonical decimal integers only: no "-0", no leading zeros, no "+", spaces, hex or exponents
-- (a value Redis would later refuse as an argument must fail here, before any write).
local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local function ident(value, optional)
  if value == '' then return optional end
  return #value <= 64 and string.match(value, '^[%w_%-]+$') ~= nil
end

local tenant, keyId, user, channel, pool, idem, resId =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if not ident(tenant, false) or base ~= string.sub(base, 1, #base - #tenant - 4) .. '{t:' .. tenant .. '}' then
  return {'INVALID_INPUT', 'tenantId'}
end
if not ident(keyId, false) then return {'INVALID_INPUT', 'keyId'} end
if not ident(user, true) then return {'INVALID_INPUT', 'userId'} end
if not ident(channel, true) then return {'INVALID_INPUT', 'channelId'} end
if not ident(pool, false) then return {'INVALID_INPUT', 'pool'} end
if not ident(idem, true) then return {'INVALID_INPUT', 'idempotencyKey'} end
if not ident(resId, false) then return {'INVALID_INPUT', 'reservationId'} end
local cost = int(ARGV[8], 0, MAX_AMOUNT)
if not cost then return {'INVALID_INPUT', 'costMicro'} end
local tokens = int(ARGV[9], 0, 1000000000)
if not tokens then return {'INVALID_INPUT', 'tokenEstimate'} end
local now = int(ARGV[10], 1, MAX_NOW)
if not now then return {'INVALID_INPUT', 'nowMs'} end
local ttl = int(ARGV[11], 1000, DAY_MS)
if not ttl then return {'INVALID_INPUT', 'ttlMs'} end
local period = ARGV[12]
if type(period) ~= 'string' or not string.match(period, '^%d%d%d%d%d%d$') then return {'INVALID_INPUT', 'period'} end
local limitNames = {'tenantRpm', 'userRpm', 'channelRpm', 'keyRpm', 'burstCapacity', 'burstRefillPerMinute',
  'keyTpd', 'tenantMonthlyCapMicro', 'keyMonthlyCapMicro'}
local limits = {}
for i, name in ipairs(limitNames) do
  local max = MAX_COUNT
  if i >= 8 then max = MAX_AMOUNT end
  local n = int(ARGV[12 + i], -1, max)
  if not n then return {'INVALID_INPUT', name} end
  limits[name] = n
end

local resKey = base .. ':res:' .. resId
if redis.call('HGET', resKey, 'state') == 'cancelled' then return {'CANCELLED'} end

local balKey = base .. ':bal'
if redis.call('EXISTS', balKey) == 0 then return {'HYDRATE'} end
local monthKey = base .. ':m:' .. period
local keyMonthKey = base .. ':km:' .. keyId .. ':' .. period

local function num(value)
  return tonumber(value) or 0
end

-- Remaining figures of the three scopes, as they stand (before this request).
local function scopes()
  local bal = redis.call('HMGET', balKey, 'credited', 'committed', 'reserved')
  local m = redis.call('HMGET', monthKey, 'committed', 'reserved')
  local km = redis.call('HMGET', keyMonthKey, 'committed', 'reserved')
  return {
    credited = num(bal[1]), balanceUsed = num(bal[2]) + num(bal[3]),
    monthUsed = num(m[1]) + num(m[2]), keyMonthUsed = num(km[1]) + num(km[2]),
  }
end

local function remainingOf(s, extra)
  local balance = s.credited - s.balanceUsed - extra
  local month, keyMonth = -1, -1
  if limits.tenantMonthlyCapMicro >= 0 then month = limits.tenantMonthlyCapMicro - s.monthUsed - extra end
  if limits.keyMonthlyCapMicro >= 0 then keyMonth = limits.keyMonthlyCapMicro - s.keyMonthUsed - extra end
  return balance, month, keyMonth
end

-- As reported: a capped scope past its cap shows 0 remaining, never the -1 that means "no cap".
local function reported(s, extra)
  local balance, month, keyMonth = remainingOf(s, extra)
  if limits.tenantMonthlyCapMicro >= 0 and month < 0 then month = 0 end
  if limits.keyMonthlyCapMicro >= 0 and keyMonth < 0 then keyMonth = 0 end
  return balance, month, keyMonth
end

-- Idempotency: a retry with the same key (per API key) answers with the original reservation,
-- never a second one. So does a retry with the same reservation id (after a timeout).
local idemKey = base .. ':idem:' .. keyId .. ':' .. idem
local priorRes = nil
if idem ~= '' then
  local prior = redis.call('HMGET', idemKey, 'res', 'expiresAt')
  if prior[1] and num(prior[2]) > now then priorRes = prior[1] end
end
if not priorRes then
  local same = redis.call('HMGET', resKey, 'keyId', 'amount')
  if same[1] then
    if same[1] ~= keyId or num(same[2]) ~= cost then return {'INVALID_INPUT', 'reservationId'} end
    priorRes = resId
  end
end
if priorRes then
  local r = redis.call('HMGET', base .. ':res:' .. priorRes, 'amount', 'state')
  local balance, month, keyMonth = reported(scopes(), 0)
  return {'ALREADY_RESERVED', priorRes, num(r[1]), r[2] or 'expired', balance, month, keyMonth}
end

-- Dimensions: compute every verdict first, write nothing until all have passed. Every denying
-- dimension is evaluated; the one that frees up last is reported, so its retry time is when the
-- whole request can pass (each dimension only frees up as time goes by).
local idx = math.floor(now / WINDOW_MS)
local elapsed = now - idx * WINDOW_MS
local writes = {}
local denied = nil
local function deny(name, limit, retry)
  if retry < 1 then retry = 1 end
  if not denied or retry > denied[5] then denied = {'RATE_LIMITED', name, limit, 0, retry, now + retry} end
end
local tightest = {name = '', limit = 0, remaining = 0, resetAt = 0}

local function consider(name, limit, remaining, resetAt)
  if tightest.name == '' or remaining < tightest.remaining then
    tightest = {name = name, limit = limit, remaining = remaining, resetAt = resetAt}
  end
end

-- Sliding window counter: estimate = current + previous * (share of the previous window still in
-- view). Multiplied through by WINDOW_MS so every figure stays an exact integer.
local function window(name, subject, limit)
  if limit < 0 then return end
  local prefix = base .. ':w:' .. name .. ':' .. subject .. ':'
  local cur = num(redis.call('GET', prefix .. idx))
  local prev = num(redis.call('GET', prefix .. (idx - 1)))
  local used = cur * WINDOW_MS + prev * (WINDOW_MS - elapsed)
  local windowEnd = (idx + 1) * WINDOW_MS
  if used + WINDOW_MS > limit * WINDOW_MS then
    local retry
    if limit == 0 then
      retry = windowEnd - now
    elseif cur + 1 <= limit then
      retry = WINDOW_MS - math.floor((limit - 1 - cur) * WINDOW_MS / prev) - elapsed
    else
      retry = (windowEnd - now) + WINDOW_MS - math.floor((limit - 1) * WINDOW_MS / cur)
    end
    deny(name, limit, retry)
    return
  end
  consider(name, limit, math.floor((limit * WINDOW_MS - used - WINDOW_MS) / WINDOW_MS), windowEnd)
  writes[#writes + 1] = function()
    redis.call('INCR', prefix .. idx)
    redis.call('PEXPIRE', prefix .. idx, 10 * WINDOW_MS)
  end
end

-- '*' is outside the id alphabet, so it never collides with a real user or channel id.
window('tenant', '*', limits.tenantRpm)
if user ~= '' then window('user', user, limits.userRpm) end
if channel ~= '' then window('channel', channel, limits.channelRpm) end

-- Burst: token bucket; levels are stored multiplied by 60000 so refill per ms is an integer.
if limits.burstCapacity >= 0 then
  local subject = user
  if subject == '' then subject = '*' end
  local burstKey = base .. ':burst:' .. subject
  local capacity, refill = limits.burstCapacity, limits.burstRefillPerMinute
  if refill < 0 then refill = 0 end
  local scaledCap = capacity * WINDOW_MS
  local state = redis.call('HMGET', burstKey, 'level', 'ts')
  local level, ts = scaledCap, now
  if state[1] then
    level, ts = num(state[1]), num(state[2])
    if now > ts then
      level = math.min(scaledCap, level + (now - ts) * refill)
      ts = now
    end
  end
  if level < WINDOW_MS then
    local retry = WINDOW_MS
    if refill > 0 and capacity >= 1 then retry = math.ceil((WINDOW_MS - level) / refill) end
    deny('burst', capacity, retry)
  else
    local after = level - WINDOW_MS
    local full = 0
    if refill > 0 then full = math.ceil((scaledCap - after) / refill) end
    consider('burst', capacity, math.floor(after / WINDOW_MS), now + full)
    writes[#writes + 1] = function()
      redis.call('HSET', burstKey, 'level', after, 'ts', ts)
      redis.call('PEXPIRE', burstKey, DAY_MS)
    end
  end
end

window('key_rpm', keyId, limits.keyRpm)

-- Tokens per UTC day, charged with the estimate now and corrected to the actual count by finalize.
local day = math.floor(now / DAY_MS)
local tpdKey = base .. ':tpd:' .. keyId .. ':' .. day
if limits.keyTpd >= 0 then
  local used = num(redis.call('GET', tpdKey))
  local dayEnd = (day + 1) * DAY_MS
  if used + tokens > limits.keyTpd then
    deny('key_tpd', limits.keyTpd, dayEnd - now)
  else
    consider('key_tpd', limits.keyTpd, limits.keyTpd - used - tokens, dayEnd)
  end
end
if denied then return denied end

-- Budget scopes: balance, tenant monthly cap, key monthly cap (a free request reserves nothing).
local s = scopes()
local balance, month, keyMonth = remainingOf(s, 0)
local function atLeastZero(n)
  if n < 0 then return 0 end
  return n
end
if cost > 0 then
  if cost > balance then return {'BUDGET_EXCEEDED', 'balance', atLeastZero(balance), s.credited} end
  if limits.tenantMonthlyCapMicro >= 0 and cost > month then
    return {'BUDGET_EXCEEDED', 'tenant_monthly', atLeastZero(month), limits.tenantMonthlyCapMicro}
  end
  if limits.keyMonthlyCapMicro >= 0 and cost > keyMonth then
    return {'BUDGET_EXCEEDED', 'key_monthly', atLeastZero(keyMonth), limits.keyMonthlyCapMicro}
  end
end

-- Admitted: apply every write.
for _, write in ipairs(writes) do write() end
redis.call('INCRBY', tpdKey, tokens)
redis.call('PEXPIRE', tpdKey, 2 * DAY_MS)
redis.call('HINCRBY', balKey, 'reserved', cost)
redis.call('HINCRBY', monthKey, 'reserved', cost)
redis.call('PEXPIRE', monthKey, 400 * DAY_MS)
redis.call('HINCRBY', keyMonthKey, 'reserved', cost)
redis.call('PEXPIRE', keyMonthKey, 400 * DAY_MS)
local deadline = now + ttl
-- No expiry while open: the reaper releases it; finalize or reap set the retention.
redis.call('HSET', resKey, 'state', 'open', 'keyId', keyId, 'pool', pool, 'amount', cost, 'tokens', tokens,
  'period', period, 'day', day, 'deadline', deadline, 'createdAt', now, 'idem', idem)
redis.call('ZADD', base .. ':resz', deadline, resId)
if idem ~= '' then
  redis.call('HSET', idemKey, 'res', resId, 'expiresAt', deadline)
  redis.call('PEXPIRE', idemKey, ttl + RETAIN_MS)
end

balance, month, keyMonth = reported(s, cost)
local warning = ''
if cost == 0 then
  -- A free request reserved nothing, so it moved no scope.
elseif s.credited > 0 and (s.balanceUsed + cost) * 5 >= s.credited * 4 then
  warning = 'balance'
elseif limits.tenantMonthlyCapMicro > 0 and (s.monthUsed + cost) * 5 >= limits.tenantMonthlyCapMicro * 4 then
  warning = 'tenant_monthly'
elseif limits.keyMonthlyCapMicro > 0 and (s.keyMonthUsed + cost) * 5 >= limits.keyMonthlyCapMicro * 4 then
  warning = 'key_monthly'
end
return {'ADMITTED', resId, balance, month, keyMonth, tightest.name, tightest.limit, tightest.remaining,
  tightest.resetAt, warning}
