-- tenant_index_mark v1: record that a tenant is active, so the jobs that visit tenants (the reaper)
-- find every tenant that may hold a reservation without scanning the keyspace. The gateway marks a
-- tenant before its first admit in each minute (per process), so a reservation never exists for a
-- tenant missing from the index.
--
-- KEYS[1]  index key  {i:tenants} (a slot of its own): sorted set tenant id -> last active ms.
--          KEYS[1] .. ':ids' holds the same ids at score 0, in byte order, for paging.
-- ARGV[1]  tenantId  [A-Za-z0-9_-]{1,64}
-- ARGV[2]  nowMs     integer ms since the epoch (the caller's clock), 1 .. 2^47
--
-- returns {"MARKED", lastActiveMs} | {"INVALID_INPUT", field}
-- A mark never moves a tenant's time back (ZADD GT): instances whose clocks differ cannot make a
-- tenant look idle.

local MAX_NOW = 140737488355328
local tenant = ARGV[1]
if type(tenant) ~= 'string' or #tenant < 1 or #tenant > 64 or not string.match(tenant, '^[%w_%-]+$') then
  return {'INVALID_INPUT', 'tenantId'}
end
local rawNow = ARGV[2]
local now = nil
if type(rawNow) == 'string' and #rawNow <= 17 and string.match(rawNow, '^[1-9]%d*$') then now = tonumber(rawNow) end
if not now or now > MAX_NOW then return {'INVALID_INPUT', 'nowMs'} end

redis.call('ZADD', KEYS[1], 'GT', now, tenant)
redis.call('ZADD', KEYS[1] .. ':ids', 'NX', 0, tenant)
return {'MARKED', tonumber(redis.call('ZSCORE', KEYS[1], tenant))}
