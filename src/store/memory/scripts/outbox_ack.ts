import { num, type Script, tenantKeys } from './shared.js';

const ENTRY_ID = /^(\d+)-(\d+)$/;

/**
 * outbox_ack: deletes written settlements from a tenant's outbox and takes the charges of those it
 * deleted off the balance's `outbox` field (clamped at 0; not written while the balance is absent).
 * Entries are named by (id, reservation id) pairs and deleted only when both match. The contract is
 * lua/outbox_ack.v1.lua.
 */
export const outboxAck: Script = (kv, keys, args) => {
  if (args.length < 2 || args.length > 2000 || args.length % 2 !== 0) return ['INVALID_INPUT', 'ids'];
  for (let i = 0; i < args.length; i += 2) {
    const [, ms, seq] = ENTRY_ID.exec(args[i] ?? '') ?? [];
    if (ms === undefined || seq === undefined || ms.length > 19 || seq.length > 19)
      return ['INVALID_INPUT', 'ids'];
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(args[i + 1] ?? '')) return ['INVALID_INPUT', 'ids'];
  }
  const base = keys[0] ?? '';
  const stream = tenantKeys.outbox(base);
  let deleted = 0;
  let released = 0;
  for (let i = 0; i < args.length; i += 2) {
    const id = args[i] ?? '';
    const entry = kv.xget(stream, id);
    if (entry === null) continue;
    const field = (name: string) => entry.fields.find(([key]) => key === name)?.[1];
    if (field('reservationId') !== args[i + 1]) continue;
    released += num(field('chargedMicro'));
    deleted += kv.xdel(stream, id);
  }
  const balance = tenantKeys.balance(base);
  // As Lua's tonumber: an absent or non-numeric field is left alone.
  const raw = kv.hget(balance, 'outbox');
  const held = raw === null || raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isNaN(held) && released > 0) kv.hset(balance, { outbox: Math.max(0, held - released) });
  return ['ACKED', deleted, released];
};
