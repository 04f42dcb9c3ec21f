-- lease_release v1: give a lease back, only if this holder still has it.
--
-- KEYS[1]  lease base key  {l:<resource>}
-- ARGV[1]  holder
-- returns {"RELEASED"} | {"NOT_HELD"}

local leaseKey = KEYS[1] .. ':lease'
if redis.call('GET', leaseKey) == ARGV[1] then
  redis.call('DEL', leaseKey)
  return {'RELEASED'}
end
return {'NOT_HELD'}
