import { ints, num, RETAIN_MS, release, type Script, tenantKeys } from './shared.js';

/**
 * budget_reap: release the open reservations whose deadline has passed (a stream that never
 * settled), claiming each by the state change open -> reaped. The contract is
 * lua/budget_reap.v2.lua.
 */
export const budgetReap: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const figures = ints(args, 0, ['nowMs', 'maxCount']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const { nowMs: now, maxCount } = figures;
  const indexKey = tenantKeys.deadlines(base);
  let count = 0;
  let released = 0;
  let drift = 0;
  for (const resId of kv.zrangeByScoreUpTo(indexKey, now, maxCount)) {
    const resKey = tenantKeys.reservation(base, resId);
    const [state, amountRaw, period, keyId] = kv.hmget(resKey, 'state', 'amount', 'period', 'keyId');
    if (state === 'open') {
      const amount = num(amountRaw);
      drift += release(kv, tenantKeys.scopes(base, keyId, period), amount);
      kv.hset(resKey, { state: 'reaped', reapedAt: now });
      kv.pexpire(resKey, RETAIN_MS);
      count += 1;
      released += amount;
    }
    kv.zrem(indexKey, resId);
  }
  return ['REAPED', count, released, drift];
};
