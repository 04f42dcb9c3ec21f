-- lease_acquire v2: take a singleton job's lease, or renew it for its holder, with a fencing token
-- that only ever grows.
-- New in v2: the holder asking again while its lease lives renews it (the TTL starts over) and
-- keeps its token (RENEWED), so one holder keeps a job across its cycles and its writes stay
-- valid; anyone else gets HELD; a new holder gets a new token (INCR), which fences off the last.
--
-- KEYS[1]  lease base key  {l:<resource>}
-- ARGV[1]  holder   who takes it (for logs, renewal and release), [A-Za-z0-9_.:-]{1,128}
-- ARGV[2]  ttlMs    integer ms, 100 .. 3600000 (PX: the lease ends by itself unless renewed)
--
-- returns {"ACQUIRED", fencingToken} | {"RENEWED", fencingToken}   (tokens as decimal strings)
--       | {"HELD", holder, pttlMs} | {"OVERFLOW"} | {"INVALID_INPUT", field}
-- OVERFLOW: the stored token is not a number below 2^53, or a new one would pass 2^53 - 1 (no
-- longer exact in JavaScript); nothing is taken.

local MAX_SAFE = 9007199254740991
local holder = ARGV[1]
if type(holder) ~= 'string' or #holder < 1 or #holder > 128 or not string.match(holder, '^[%w_%.:%-]+$') then
  return {'INVALID_INPUT', 'holder'}
end
local rawTtl = ARGV[2]
local ttl = nil
if type(rawTtl) == 'string' and #rawTtl <= 7 and string.match(rawTtl, '^[1-9]%d*$') then ttl = tonumber(rawTtl) end
if not ttl or ttl < 100 or ttl > 3600000 then return {'INVALID_INPUT', 'ttlMs'} end

local leaseKey, tokenKey = KEYS[1] .. ':lease', KEYS[1] .. ':token'
local current = redis.call('GET', tokenKey)
if current and (not string.match(current, '^%d+$') or #current > 16 or tonumber(current) > MAX_SAFE) then
  return {'OVERFLOW'}
end
if current and redis.call('GET', leaseKey) == holder then
  redis.call('PEXPIRE', leaseKey, ttl)
  return {'RENEWED', current}
end
if current and tonumber(current) >= MAX_SAFE then return {'OVERFLOW'} end
if not redis.call('SET', leaseKey, holder, 'NX', 'PX', ttl) then
  return {'HELD', redis.call('GET', leaseKey) or '', redis.call('PTTL', leaseKey)}
end
redis.call('INCR', tokenKey)
-- As a string: integer replies near 2^53 lose precision in some clients (ioredis's parser).
return {'ACQUIRED', redis.call('GET', tokenKey)}
