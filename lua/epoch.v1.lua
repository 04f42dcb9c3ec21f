-- epoch v1: a counter that only grows, for "something changed, drop your caches" signals
-- (API key revocations, rotations and tenant freezes reach every instance within a second).
--
-- KEYS[1]  epoch base key  {g:<name>}
-- ARGV[1]  "get" | "bump"
--
-- returns {"EPOCH", value (decimal string)} | {"INVALID_INPUT", "op"}

local key = KEYS[1] .. ':epoch'
if ARGV[1] == 'bump' then
  redis.call('INCR', key)
elseif ARGV[1] ~= 'get' then
  return {'INVALID_INPUT', 'op'}
end
return {'EPOCH', redis.call('GET', key) or '0'}
