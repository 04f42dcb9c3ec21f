import { MAX_BALANCE_MICRO } from '../../../budget/bounds.js';
import { arg, ident, MAX_AMOUNT, type Script, tenantKeys } from './shared.js';

/**
 * hydrate: rebuild a tenant's balance from the book after the store lost it, only while the
 * balance hash is still absent. The contract is lua/hydrate.v1.lua.
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
  if (args.length % 2 !== 0) return ['INVALID_INPUT', 'grants'];
  for (let i = 2; i < args.length; i += 2) {
    if (!ident(args[i], false)) return ['INVALID_INPUT', 'grantId'];
    if (amount(arg(args, i + 1), 1, MAX_AMOUNT) === null) return ['INVALID_INPUT', 'amountMicro'];
  }
  const balKey = tenantKeys.balance(base);
  if (kv.exists(balKey)) return ['ALREADY_PRESENT'];
  kv.hset(balKey, { credited, committed, reserved: 0 });
  const grantsKey = `${base}:grants`;
  kv.del(grantsKey);
  for (let i = 2; i < args.length; i += 2) kv.hset(grantsKey, { [arg(args, i)]: arg(args, i + 1) });
  return ['HYDRATED'];
};
