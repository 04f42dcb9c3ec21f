import { arg, balanceOf, ident, ints, num, RETAIN_MS, release, type Script, tenantKeys } from './shared.js';

/**
 * budget_finalize: settle a reservation exactly once, charging min(actual, reserved) and releasing
 * the rest; a cancel is a finalize with actual cost 0 and frees the idempotency key. A cancel of an
 * unknown id writes a tombstone (state `cancelled`) that admit refuses. A settlement that names the
 * spend row's key appends it to the tenant's outbox and adds its charge to the balance's `outbox`
 * field. The contract is lua/budget_finalize.v4.lua.
 */
export const budgetFinalize: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const resId = arg(args, 0);
  if (!ident(resId, false)) return ['INVALID_INPUT', 'reservationId'];
  const figures = ints(args, 1, ['actualCostMicro', 'actualTokens', 'nowMs']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const { actualCostMicro: actual, actualTokens, nowMs: now } = figures;
  const rowKeyId = arg(args, 4);
  if (!ident(rowKeyId, true) || (rowKeyId === '' && actual > 0)) return ['INVALID_INPUT', 'keyId'];
  const usage = ints(args, 5, ['promptTokens', 'completionTokens']);
  if (typeof usage === 'string') return ['INVALID_INPUT', usage];
  const free = arg(args, 7);
  if (free !== '0' && free !== '1') return ['INVALID_INPUT', 'free'];

  const resKey = tenantKeys.reservation(base, resId);
  const [state, amountRaw, tokensRaw, period, keyId, day, charged, idem, pool] = kv.hmget(
    resKey,
    'state',
    'amount',
    'tokens',
    'period',
    'keyId',
    'day',
    'charged',
    'idem',
    'pool',
  );
  if (!state || state === 'cancelled') {
    if (actual > 0) return ['INVALID_INPUT', 'reservationId'];
    if (!state) {
      kv.hset(resKey, { state: 'cancelled', finalizedAt: now });
      kv.pexpire(resKey, RETAIN_MS);
    }
    return ['CANCELLED_BEFORE_ADMIT'];
  }
  if (state === 'finalized') return ['ALREADY_FINALIZED', num(charged)];

  const amount = num(amountRaw);
  if (free === '1' && amount > 0) return ['INVALID_INPUT', 'free'];
  const estimate = num(tokensRaw);
  const charge = Math.min(actual, amount);
  const counters = tenantKeys.scopes(base, keyId, period);

  if (rowKeyId !== '') {
    kv.xadd(tenantKeys.outbox(base), [
      ['reservationId', resId],
      ['keyId', rowKeyId],
      ['pool', pool ?? ''],
      ['promptTokens', arg(args, 5)],
      ['completionTokens', arg(args, 6)],
      ['costMicro', String(free === '1' ? actual : charge)],
      ['chargedMicro', String(charge)],
      ['free', free],
      ['settledAtMs', arg(args, 3)],
    ]);
    if (charge > 0) kv.hincrby(tenantKeys.balance(base), 'outbox', charge);
  }

  let drift = 0;
  if (state === 'open') {
    drift = release(kv, counters, amount);
    kv.zrem(tenantKeys.deadlines(base), resId);
  }
  for (const key of counters) kv.hincrby(key, 'committed', charge);

  const tpdKey = tenantKeys.tokensPerDay(base, keyId, day);
  const used = kv.get(tpdKey);
  if (used !== null)
    kv.set(tpdKey, String(Math.max(0, num(used) + actualTokens - estimate)), { keepTtl: true });

  kv.hset(resKey, { state: 'finalized', charged: charge, finalizedAt: now });
  kv.pexpire(resKey, RETAIN_MS);
  // A cancel (actual 0) frees the idempotency key; a settled free request keeps it.
  if (actual === 0 && idem) {
    const idemKey = tenantKeys.idempotency(base, keyId, idem);
    if (kv.hget(idemKey, 'res') === resId) kv.del(idemKey);
  }
  if (state === 'open') return ['FINALIZED', charge, amount - charge, drift];

  const { credited, committed, reserved } = balanceOf(kv, base);
  const overspend = charge > 0 && committed + reserved > credited ? 1 : 0;
  return ['LATE_FINALIZE', charge, overspend, drift];
};
