-- tenant_index_page v1: one page of the tenant index, in byte order of tenant id, after a cursor.
-- The cursor is a tenant id, not a position: a tenant in the index for the whole scan is listed
-- once however many tenants are marked or pruned meanwhile (one added behind the cursor waits for
-- the next scan).
--
-- KEYS[1]  index key  {i:tenants} (see tenant_index_mark)
-- ARGV[1]  after   the last tenant id of the previous page (exclusive), or "" to start
-- ARGV[2]  limit   integer 1 .. 1000
--
-- returns {"PAGE", next, tenantId, lastActiveMs, tenantId, lastActiveMs, ...}
--         next: the cursor of the following page, "" when this page is the last
--       | {"INVALID_INPUT", field}

local after = ARGV[1]
if type(after) ~= 'string' or #after > 64 or (after ~= '' and not string.match(after, '^[%w_%-]+$')) then
  return {'INVALID_INPUT', 'after'}
end
local rawLimit = ARGV[2]
local limit = nil
if type(rawLimit) == 'string' and #rawLimit <= 4 and string.match(rawLimit, '^[1-9]%d*$') then limit = tonumber(rawLimit) end
if not limit or limit > 1000 then return {'INVALID_INPUT', 'limit'} end

local from = '-'
if after ~= '' then from = '(' .. after end
local ids = redis.call('ZRANGEBYLEX', KEYS[1] .. ':ids', from, '+', 'LIMIT', 0, limit)
local reply = {'PAGE', ''}
if #ids == limit then reply[2] = ids[#ids] end
for _, id in ipairs(ids) do
  reply[#reply + 1] = id
  -- 0 when only the id survived (never written so by these scripts): the tenant looks idle.
  reply[#reply + 1] = tonumber(redis.call('ZSCORE', KEYS[1], id)) or 0
end
return reply
