import { MAX_BALANCE_MICRO } from '../../../budget/bounds.js';
import { arg, balanceOf, ident, MAX_AMOUNT, type Script, tenantKeys } from './shared.js';

/**
 * credit: raise a tenant's balance once per grant (a minted payment, an admin grant). The
 * contract is lua/credit.v2.lua.
 */

const MAX_BALANCE = Number(MAX_BALANCE_MICRO);

export const credit: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const grantId = arg(args, 0);
  if (!ident(grantId, false)) return ['INVALID_INPUT', 'grantId'];
  const raw = arg(args, 1);
  const amount = raw.length <= 17 && /^[1-9]\d*$/.test(raw) ? Number(raw) : null;
  if (amount === null || amount < 1 || amount > MAX_AMOUNT) return ['INVALID_INPUT', 'amountMicro'];
  // A grant never creates a balance holding only itself: rebuild it from the book first.
  if (!kv.exists(tenantKeys.balance(base))) return ['HYDRATE'];
  const figures = (): [number, number] => {
    const { credited, committed, reserved } = balanceOf(kv, base);
    return [credited, credited - committed - reserved];
  };
  const applied = kv.hget(`${base}:grants`, grantId);
  if (applied !== null) {
    if (Number(applied) !== amount) return ['INVALID_INPUT', 'grantId'];
    return ['ALREADY_APPLIED', ...figures()];
  }
  if (figures()[0] + amount > MAX_BALANCE) return ['INVALID_INPUT', 'amountMicro'];
  kv.hset(`${base}:grants`, { [grantId]: amount });
  kv.hincrby(tenantKeys.balance(base), 'credited', amount);
  return ['CREDITED', ...figures()];
};
