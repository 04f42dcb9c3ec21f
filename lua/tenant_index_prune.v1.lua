-- tenant_index_prune v1: drop an idle tenant from the index, unless it was marked after the cutoff.
-- The reaper decides a tenant is idle (last marked at or before the cutoff, nothing reserved), then
-- calls this: a mark that lands in between (a new request) wins, and the tenant stays.
--
-- KEYS[1]  index key  {i:tenants} (see tenant_index_mark)
-- ARGV[1]  tenantId  [A-Za-z0-9_-]{1,64}
-- ARGV[2]  cutoffMs  integer ms, 0 .. 2^47: removed only if its last active ms <= cutoffMs
--
-- returns {"PRUNED"} | {"KEPT", lastActiveMs} | {"ABSENT"} | {"INVALID_INPUT", field}

local MAX_NOW = 140737488355328
local tenant = ARGV[1]
if type(tenant) ~= 'string' or #tenant < 1 or #tenant > 64 or not string.match(tenant, '^[%w_%-]+$') then
  return {'INVALID_INPUT', 'tenantId'}
end
local rawCutoff = ARGV[2]
local cutoff = nil
if type(rawCutoff) == 'string' and #rawCutoff <= 17 and (rawCutoff == '0' or string.match(rawCutoff, '^[1-9]%d*$')) then
  cutoff = tonumber(rawCutoff)
end
if not cutoff or cutoff > MAX_NOW then return {'INVALID_INPUT', 'cutoffMs'} end

local score = redis.call('ZSCORE', KEYS[1], tenant)
if not score then
  redis.call('ZREM', KEYS[1] .. ':ids', tenant)
  return {'ABSENT'}
end
local lastActive = tonumber(score)
if lastActive > cutoff then return {'KEPT', lastActive} end
redis.call('ZREM', KEYS[1], tenant)
redis.call('ZREM', KEYS[1] .. ':ids', tenant)
return {'PRUNED'}
