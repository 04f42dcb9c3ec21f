-- outbox_read v1: the oldest settlements waiting in a tenant's outbox (appended by
-- budget_finalize v4), for the drain that writes them to PostgreSQL. Reads only.
--
-- KEYS[1]  tenant base key  {t:<tenantId>}
-- ARGV[1]  count            integer 1 .. 1000: at most this many entries, oldest first
-- ARGV[2]  olderThanMs      "" or absent: every entry; else integer ms since the epoch, 1 .. 2^47:
--                            only entries appended before it (by the entry id's time, the store's
--                            clock), so a drain can leave young entries to the process that
--                            settled them (it writes its own rows, then acknowledges them)
--
-- returns {"OUTBOX", then per entry: entryId, reservationId, keyId, pool, promptTokens,
--          completionTokens, costMicro, chargedMicro, free, settledAtMs}   (10 strings each; a
--          field missing from an entry reads "")
--       | {"INVALID_INPUT", "count" | "olderThanMs"}

local FIELDS = {'reservationId', 'keyId', 'pool', 'promptTokens', 'completionTokens', 'costMicro',
  'chargedMicro', 'free', 'settledAtMs'}

-- Canonical decimal integers only, as in every script that reads one.
local function int(value, min, max)
  if type(value) ~= 'string' or #value > 17 then return nil end
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(value)
  if n == nil or n < min or n > max then return nil end
  return n
end

local count = int(ARGV[1], 1, 1000)
if not count then return {'INVALID_INPUT', 'count'} end
-- XRANGE's end is inclusive: entries whose time is at most olderThanMs - 1.
local last = '+'
if ARGV[2] and ARGV[2] ~= '' then
  local olderThan = int(ARGV[2], 1, 140737488355328)
  if not olderThan then return {'INVALID_INPUT', 'olderThanMs'} end
  last = string.format('%.0f', olderThan - 1)
end

local reply = {'OUTBOX'}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1] .. ':outbox', '-', last, 'COUNT', count)) do
  local values = {}
  local fields = entry[2]
  for i = 1, #fields, 2 do values[fields[i]] = fields[i + 1] end
  reply[#reply + 1] = entry[1]
  for _, field in ipairs(FIELDS) do reply[#reply + 1] = values[field] or '' end
end
return reply
