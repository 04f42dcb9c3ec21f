-- fencing_cas v2: accept a write only from the live holder of the newest lease, as often as it
-- writes. Every write of a singleton job passes through here with its fencing token. A paused
-- process whose lease expired is refused, taken over or not: the token must be the one issued
-- last and the lease must still be this holder's.
-- New in v2: the holder's token is accepted again for each of its writes (v1 accepted a token
-- once, which a job writing many times per lease cannot use); an older token is refused as before;
-- and the lease must be held by the writer (ARGV[2]), not merely exist: after Redis lost its data the
-- token counter starts again, and a paused holder of the old token 1 must not pass as the new one.
--
-- KEYS[1]  lease base key  {l:<resource>}
-- ARGV[1]  fencingToken  integer 0 .. 2^53 - 1
-- ARGV[2]  holder        who writes, as it took the lease, [A-Za-z0-9_.:-]{1,128}
--
-- returns {"OK"}                    token >= the last accepted (or none yet), it is the token
--                                   issued last and the lease is this holder's; it is now the last
--                                   accepted
--       | {"STALE", lastAccepted}   otherwise (lastAccepted: decimal string, "" if none)
--       | {"CORRUPT"}               the stored value is non-numeric, negative or > 2^53 - 1: fail closed
--       | {"INVALID_INPUT", "fencingToken" | "holder"}

local MAX_SAFE = 9007199254740991
local raw = ARGV[1]
if type(raw) ~= 'string' or #raw > 16 or not (raw == '0' or string.match(raw, '^[1-9]%d*$'))
  or tonumber(raw) > MAX_SAFE then
  return {'INVALID_INPUT', 'fencingToken'}
end
local token = tonumber(raw)
local holder = ARGV[2]
if type(holder) ~= 'string' or #holder < 1 or #holder > 128 or not string.match(holder, '^[%w_%.:%-]+$') then
  return {'INVALID_INPUT', 'holder'}
end
local fenceKey = KEYS[1] .. ':fence'
local stored = redis.call('GET', fenceKey)
if stored then
  if not string.match(stored, '^%d+$') or #stored > 16 or tonumber(stored) > MAX_SAFE then
    return {'CORRUPT'}
  end
  if token < tonumber(stored) then return {'STALE', stored} end
end
if redis.call('GET', KEYS[1] .. ':token') ~= raw or redis.call('GET', KEYS[1] .. ':lease') ~= holder then
  return {'STALE', stored or ''}
end
redis.call('SET', fenceKey, raw)
return {'OK'}
