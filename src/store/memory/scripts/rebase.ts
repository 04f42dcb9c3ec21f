import { MAX_BALANCE_MICRO } from '../../../budget/bounds.js';
import { arg, ident, MAX_AMOUNT, num, type Script, tenantKeys } from './shared.js';

/**
 * rebase: set a tenant's balance to the book's figures, only if it still holds exactly the
 * figures the conservation check read (compare-and-set). The contract is lua/rebase.v1.lua.
 */

const MAX_BALANCE = Number(MAX_BALANCE_MICRO);

/** A canonical decimal integer within [min, max] (negative allowed), as the Lua script reads it. */
function int(value: string, min: number, max: number): number | null {
  if (value.length > 17 || (value !== '0' && !/^-?[1-9]\d*$/.test(value))) return null;
  const n = Number(value);
  return n < min || n > max ? null : n;
}

export const rebase: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const expectedCredited = int(arg(args, 0), -MAX_BALANCE, MAX_BALANCE);
  if (expectedCredited === null) return ['INVALID_INPUT', 'expectedCreditedMicro'];
  const expectedCommitted = int(arg(args, 1), -MAX_BALANCE, MAX_BALANCE);
  if (expectedCommitted === null) return ['INVALID_INPUT', 'expectedCommittedMicro'];
  const expectedOutbox = int(arg(args, 2), -MAX_BALANCE, MAX_BALANCE);
  if (expectedOutbox === null) return ['INVALID_INPUT', 'expectedOutboxMicro'];
  const credited = int(arg(args, 3), 0, MAX_BALANCE);
  if (credited === null) return ['INVALID_INPUT', 'creditedMicro'];
  const spent = int(arg(args, 4), 0, MAX_BALANCE);
  if (spent === null) return ['INVALID_INPUT', 'spentMicro'];
  const grantCount = int(arg(args, 5), 0, 1_000_000);
  if (grantCount === null || 6 + 2 * grantCount !== args.length) return ['INVALID_INPUT', 'grantCount'];
  for (let i = 6; i < args.length; i += 2) {
    if (!ident(args[i], false)) return ['INVALID_INPUT', 'grantId'];
    if (int(arg(args, i + 1), 1, MAX_AMOUNT) === null) return ['INVALID_INPUT', 'amountMicro'];
  }

  const balKey = tenantKeys.balance(base);
  if (!kv.exists(balKey)) return ['ABSENT'];
  const [nowCredited, nowCommitted, reserved, outbox] = kv
    .hmget(balKey, 'credited', 'committed', 'reserved', 'outbox')
    .map(num) as [number, number, number, number];
  if (nowCredited !== expectedCredited || nowCommitted !== expectedCommitted || outbox !== expectedOutbox) {
    return ['CHANGED', nowCredited, nowCommitted, outbox];
  }
  const committed = spent + outbox;
  if (committed < 0 || committed > MAX_BALANCE) return ['INVALID_INPUT', 'spentMicro'];

  kv.hset(balKey, { credited, committed });
  const grantsKey = `${base}:grants`;
  kv.del(grantsKey);
  for (let i = 6; i < args.length; i += 2) kv.hset(grantsKey, { [arg(args, i)]: arg(args, i + 1) });
  return ['REBASED', credited, committed, reserved, outbox];
};
