-- fencing_cas v1: accept a write only from the live holder of the newest lease.
-- Every write of a singleton job passes through here with its fencing token. A paused process
-- whose lease expired is refused, taken over or not: the token must be the one issued last and
-- the lease must still exist.
--
-- KEYS[1]  lease base key  {l:<resource>}
-- ARGV[1]  fencingToken  integer 0 .. 2^53 - 1
--
-- returns {"OK"}                    token > the last accepted (or none yet); it is now the last
--       | {"STALE", lastAccepted}   token <= the last accepted, or not the token issued last, or the
--                                   lease has expired (lastAccepted: decimal string, "" if none)
--       | {"CORRUPT"}               the stored value is non-numeric, negative or > 2^53 - 1: fail closed
--       | {"INVALID_INPUT", "fencingToken"}

local MAX_SAFE = 9007199254740991
local raw = ARGV[1]
if type(raw) ~= 'string' or #raw > 16 or not (raw == '0' or string.match(raw, '^[1-9]%d*$'))
  or tonumber(raw) > MAX_SAFE then
  return {'INVALID_INPUT', 'fencingToken'}
end
local token = tonumber(raw)
local fenceKey = KEYS[1] .. ':fence'
local stored = redis.call('GET', fenceKey)
if stored then
  if not string.match(stored, '^%d+$') or #stored > 16 or tonumber(stored) > MAX_SAFE then
    return {'CORRUPT'}
  end
  if token <= tonumber(stored) then return {'STALE', stored} end
end
if redis.call('GET', KEYS[1] .. ':token') ~= raw or redis.call('EXISTS', KEYS[1] .. ':lease') == 0 then
  return {'STALE', stored or ''}
end
redis.call('SET', fenceKey, raw)
return {'OK'}
