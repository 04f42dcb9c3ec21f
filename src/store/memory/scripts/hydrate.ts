import { MAX_BALANCE_MICRO } from '../../../budget/bounds.js';
import { arg, DAY_MS, ident, MAX_AMOUNT, type Script, tenantKeys } from './shared.js';

/**
 * hydrate: rebuild a tenant's balance (and this month's cap counters) from the book after the
 * store lost them, only while the balance hash is still absent. The contract is
 * lua/hydrate.v1.lua.
 */

const MAX_BALANCE = Number(MAX_BALANCE_MICRO);

/** A canonical non-negative decimal integer within [min, max], as the Lua script reads it. */
function amount(value: string, min: number, max: number): number | null {
  if (value.length > 17 || (value !== '0' && !/^[1-9]\d*$/.test(value))) return null;
  const n = Number(value);
  return n < min || n > max ? null : n;
}

export const hydrate: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const credited = amount(arg(args, 0), 0, MAX_BALANCE);
  if (credited === null) return ['INVALID_INPUT', 'creditedMicro'];
  const committed = amount(arg(args, 1), 0, MAX_BALANCE);
  if (committed === null) return ['INVALID_INPUT', 'committedMicro'];
  const period = arg(args, 2);
  if (period !== '' && !/^\d{6}$/.test(period)) return ['INVALID_INPUT', 'period'];
  const monthCommitted = amount(arg(args, 3), 0, MAX_BALANCE);
  if (monthCommitted === null) return ['INVALID_INPUT', 'monthCommittedMicro'];
  const grantCount = amount(arg(args, 4), 0, 1_000_000);
  if (grantCount === null || 5 + 2 * grantCount > args.length) return ['INVALID_INPUT', 'grantCount'];
  // 0-based index of the first keyId (ARGV[6 + 2n] in the Lua script).
  const keysFrom = 5 + 2 * grantCount;
  if ((args.length - keysFrom) % 2 !== 0) return ['INVALID_INPUT', 'keys'];
  for (let i = 5; i < keysFrom; i += 2) {
    if (!ident(args[i], false)) return ['INVALID_INPUT', 'grantId'];
    if (amount(arg(args, i + 1), 1, MAX_AMOUNT) === null) return ['INVALID_INPUT', 'amountMicro'];
  }
  for (let i = keysFrom; i < args.length; i += 2) {
    if (!ident(args[i], false)) return ['INVALID_INPUT', 'keyId'];
    if (amount(arg(args, i + 1), 0, MAX_BALANCE) === null) return ['INVALID_INPUT', 'keyCommittedMicro'];
  }

  const balKey = tenantKeys.balance(base);
  if (kv.exists(balKey)) return ['ALREADY_PRESENT'];
  kv.hset(balKey, { credited, committed, reserved: 0 });
  const grantsKey = `${base}:grants`;
  kv.del(grantsKey);
  for (let i = 5; i < keysFrom; i += 2) kv.hset(grantsKey, { [arg(args, i)]: arg(args, i + 1) });
  const month = (key: string, value: number) => {
    if (kv.exists(key)) return;
    kv.hset(key, { committed: value, reserved: 0 });
    kv.pexpire(key, 400 * DAY_MS);
  };
  if (period !== '') {
    month(`${base}:m:${period}`, monthCommitted);
    for (let i = keysFrom; i < args.length; i += 2) {
      month(`${base}:km:${arg(args, i)}:${period}`, amount(arg(args, i + 1), 0, MAX_BALANCE) ?? 0);
    }
  }
  return ['HYDRATED'];
};
