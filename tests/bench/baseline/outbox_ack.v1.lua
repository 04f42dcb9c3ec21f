-- outbox_ack v1: removes settlements a drain has written to PostgreSQL from a tenant's outbox and
-- takes their charges off the balance's `outbox` field. Each entry is read before it is deleted,
-- so drainers acknowledging the same entries (or one id twice) take each charge off once; the
-- field never goes below 0, and is not written while the balance hash is absent (an absent
-- balance is rebuilt from the book by hydrate, which a lone `outbox` field would prevent).
-- An entry is named by its id and its reservation id, and deleted only when both match: after
-- Redis lost its data a stream's ids may be issued again (from a clock behind the old one), and an
-- acknowledgement of a settlement written before the loss must not delete a new, unwritten one.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1 .. 2n]  n pairs: an entry id as outbox_read returned it, "<ms>-<seq>" (at most 19 digits
--                each), then its reservation id [A-Za-z0-9_-]{1,64}; 1 .. 1000 pairs
--
-- returns {"ACKED", deletedCount, releasedMicro}   the entries deleted now, and their charges
--       | {"INVALID_INPUT", "ids"}   (nothing written)

if #ARGV < 2 or #ARGV > 2000 or #ARGV % 2 ~= 0 then return {'INVALID_INPUT', 'ids'} end
for i = 1, #ARGV, 2 do
  local ms, seq = string.match(ARGV[i], '^(%d+)%-(%d+)$')
  if not ms or #ms > 19 or #seq > 19 then return {'INVALID_INPUT', 'ids'} end
  local resId = ARGV[i + 1]
  if #resId < 1 or #resId > 64 or not string.match(resId, '^[%w_%-]+$') then return {'INVALID_INPUT', 'ids'} end
end

local stream = KEYS[1] .. ':outbox'
local deleted, released = 0, 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local found = redis.call('XRANGE', stream, id, id)
  if #found > 0 then
    local fields = found[1][2]
    local charged, resId = 0, nil
    for f = 1, #fields, 2 do
      if fields[f] == 'chargedMicro' then charged = tonumber(fields[f + 1]) or 0 end
      if fields[f] == 'reservationId' then resId = fields[f + 1] end
    end
    if resId == ARGV[i + 1] then
      released = released + charged
      deleted = deleted + redis.call('XDEL', stream, id)
    end
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
