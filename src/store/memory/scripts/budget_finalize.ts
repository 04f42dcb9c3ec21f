import { arg, balanceOf, ident, ints, num, RETAIN_MS, release, type Script, tenantKeys } from './shared.js';

/**
 * budget_finalize: settle a reservation exactly once, charging min(actual, reserved) and releasing
 * the rest; a cancel is a finalize with actual cost 0 and frees the idempotency key. A cancel of an
 * unknown id writes a tombstone (state `cancelled`) that admit refuses. A settlement that names the
 * spend row's key appends it to the tenant's outbox and adds its charge to the balance's `outbox`
 * field, and answers the entry's id. In recovery mode (a pool in args[8]) a charge for a reservation
 * the store lost is committed (RECOVERED), after HYDRATE while the balance is absent. The contract
 * is lua/budget_finalize.v4.lua.
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
  const recoverPool = arg(args, 8);
  if (!ident(recoverPool, true)) return ['INVALID_INPUT', 'pool'];
  const recoverPeriod = arg(args, 9);
  if (recoverPool !== '' && !/^\d{6}$/.test(recoverPeriod)) return ['INVALID_INPUT', 'period'];

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
  if (!state && recoverPool !== '' && rowKeyId !== '') {
    // Recovery: the reservation was lost with the store's data; the delivered tokens are billed (a
    // charge of 0, e.g. an upstream that never answered, is recorded as such, never tombstoned).
    const balance = tenantKeys.balance(base);
    const charge = free === '1' ? 0 : actual;
    if (charge > 0 && !kv.exists(balance)) return ['HYDRATE'];
    const entryId = kv.xadd(tenantKeys.outbox(base), [
      ['reservationId', resId],
      ['keyId', rowKeyId],
      ['pool', recoverPool],
      ['promptTokens', arg(args, 5)],
      ['completionTokens', arg(args, 6)],
      ['costMicro', String(actual)],
      ['chargedMicro', String(charge)],
      ['free', free],
      ['settledAtMs', arg(args, 3)],
    ]);
    // A paid key is its own limit subject (only sandbox keys share one, and they are charged 0).
    if (charge > 0) {
      kv.hincrby(balance, 'outbox', charge);
      for (const key of tenantKeys.scopes(base, rowKeyId, recoverPeriod))
        kv.hincrby(key, 'committed', charge);
    }
    kv.hset(resKey, {
      state: 'finalized',
      charged: charge,
      finalizedAt: now,
      keyId: rowKeyId,
      pool: recoverPool,
      period: recoverPeriod,
      recovered: 1,
    });
    kv.pexpire(resKey, RETAIN_MS);
    const { credited, committed, reserved } = balanceOf(kv, base);
    const overspend = charge > 0 && committed + reserved > credited ? 1 : 0;
    return ['RECOVERED', charge, overspend, 0, entryId];
  }
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

  let entryId = '';
  if (rowKeyId !== '') {
    entryId = kv.xadd(tenantKeys.outbox(base), [
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
  if (state === 'open') return ['FINALIZED', charge, amount - charge, drift, entryId];

  const { credited, committed, reserved } = balanceOf(kv, base);
  const overspend = charge > 0 && committed + reserved > credited ? 1 : 0;
  return ['LATE_FINALIZE', charge, overspend, drift, entryId];
};
