-- outbox_ack v1: removes settlements a drain has written to PostgreSQL from a tenant's outbox and
-- takes their charges off the balance's `outbox` field. Each entry is read before it is deleted,
-- so drainers acknowledging the same entries (or one id twice) take each charge off once; the
-- field never goes below 0, and is not written while the balance hash is absent (an absent
-- balance is rebuilt from the book by hydrate, which a lone `outbox` field would prevent).
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1 .. n]  entry ids as outbox_read returned them, "<ms>-<seq>" (at most 19 digits each),
--               1 .. 1000 of them
--
-- returns {"ACKED", deletedCount, releasedMicro}   the entries deleted now, and their charges
--       | {"INVALID_INPUT", "ids"}   (nothing written)

if #ARGV < 1 or #ARGV > 1000 then return {'INVALID_INPUT', 'ids'} end
for _, id in ipairs(ARGV) do
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if not ms or #ms > 19 or #seq > 19 then return {'INVALID_INPUT', 'ids'} end
end

local stream = KEYS[1] .. ':outbox'
local deleted, released = 0, 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', stream, id, id)
  if #found > 0 then
    local fields = found[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'chargedMicro' then released = released + (tonumber(fields[i + 1]) or 0) end
    end
    deleted = deleted + redis.call('XDEL', stream, id)
  end
end

local balKey = KEYS[1] .. ':bal'
local held = tonumber(redis.call('HGET', balKey, 'outbox'))
if held and released > 0 then
  local left = held - released
  if left < 0 then left = 0 end
  redis.call('HSET', balKey, 'outbox', left)
end
return {'ACKED', deleted, released}
