import { num, type Script, tenantKeys } from './shared.js';

const ENTRY_ID = /^(\d+)-(\d+)$/;

/**
 * outbox_ack: deletes written settlements from a tenant's outbox and takes the charges of those it
 * deleted off the balance's `outbox` field (clamped at 0; not written while the balance is absent).
 * The contract is lua/outbox_ack.v1.lua.
 */
export const outboxAck: Script = (kv, keys, args) => {
  if (args.length < 1 || args.length > 1000) return ['INVALID_INPUT', 'ids'];
  for (const id of args) {
    const [, ms, seq] = ENTRY_ID.exec(id) ?? [];
    if (ms === undefined || seq === undefined || ms.length > 19 || seq.length > 19)
      return ['INVALID_INPUT', 'ids'];
  }
  const base = keys[0] ?? '';
  const stream = tenantKeys.outbox(base);
  let deleted = 0;
  let released = 0;
  for (const id of args) {
    const entry = kv.xget(stream, id);
    if (entry === null) continue;
    released += num(entry.fields.find(([field]) => field === 'chargedMicro')?.[1]);
    deleted += kv.xdel(stream, id);
  }
  const balance = tenantKeys.balance(base);
  // As Lua's tonumber: an absent or non-numeric field is left alone.
  const raw = kv.hget(balance, 'outbox');
  const held = raw === null || raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isNaN(held) && released > 0) kv.hset(balance, { outbox: Math.max(0, held - released) });
  return ['ACKED', deleted, released];
};
