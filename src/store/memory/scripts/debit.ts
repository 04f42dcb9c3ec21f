import { arg, balanceOf, ident, MAX_AMOUNT, type Script, tenantKeys } from './shared.js';

/**
 * debit: lower a tenant's balance once per debit (a refunded payment). The applied id shares the
 * `:grants` hash with credit's, which hydrate and rebase rebuild from the book. The contract is
 * lua/debit.v1.lua.
 */

export const debit: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const debitId = arg(args, 0);
  if (!ident(debitId, false)) return ['INVALID_INPUT', 'debitId'];
  const raw = arg(args, 1);
  const amount = raw.length <= 17 && /^[1-9]\d*$/.test(raw) ? Number(raw) : null;
  if (amount === null || amount < 1 || amount > MAX_AMOUNT) return ['INVALID_INPUT', 'amountMicro'];
  if (!kv.exists(tenantKeys.balance(base))) return ['HYDRATE'];
  const figures = (): [number, number] => {
    const { credited, committed, reserved } = balanceOf(kv, base);
    return [credited, credited - committed - reserved];
  };
  const applied = kv.hget(`${base}:grants`, debitId);
  if (applied !== null) {
    if (Number(applied) !== amount) return ['INVALID_INPUT', 'debitId'];
    return ['ALREADY_APPLIED', ...figures()];
  }
  // credited never goes below 0; available may (open reservations and settled charges stand).
  if (figures()[0] - amount < 0) return ['INVALID_INPUT', 'amountMicro'];
  kv.hset(`${base}:grants`, { [debitId]: amount });
  kv.hincrby(tenantKeys.balance(base), 'credited', -amount);
  return ['DEBITED', ...figures()];
};
