import { arg, ints, type Script, tenantKeys } from './shared.js';

/** The fields of an outbox entry, in the order outbox_read replies with them. */
const OUTBOX_FIELDS = [
  'reservationId',
  'keyId',
  'pool',
  'promptTokens',
  'completionTokens',
  'costMicro',
  'chargedMicro',
  'free',
  'settledAtMs',
] as const;

/**
 * outbox_read: the oldest settlements waiting in a tenant's outbox (only those appended before
 * olderThanMs, when given), each as its id then its fields. The contract is lua/outbox_read.v1.lua.
 */
export const outboxRead: Script = (kv, keys, args) => {
  const figures = ints(args, 0, ['count']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  let lastMs = Number.POSITIVE_INFINITY;
  if (arg(args, 1) !== '') {
    const bound = ints(args, 1, ['olderThanMs']);
    if (typeof bound === 'string') return ['INVALID_INPUT', bound];
    lastMs = bound.olderThanMs - 1;
  }
  const reply: string[] = ['OUTBOX'];
  for (const entry of kv.xrange(tenantKeys.outbox(keys[0] ?? ''), figures.count, lastMs)) {
    const values = new Map(entry.fields);
    reply.push(entry.id, ...OUTBOX_FIELDS.map((field) => values.get(field) ?? ''));
  }
  return reply;
};
