import type { Reply } from '../../port.js';
import {
  arg,
  balanceOf,
  DAY_MS,
  ident,
  ints,
  num,
  RETAIN_MS,
  rateLimited,
  type Script,
  tenantKeys,
  WINDOW_MS,
} from './shared.js';

/**
 * admit: every rate-limit dimension and every budget scope decided in one atomic step; a denial
 * writes nothing, an admission charges every dimension and reserves the cost (0: a free request,
 * rate-limited but outside every budget scope); a reservation id already cancelled (a tombstone)
 * answers CANCELLED. Every counter checked is read at once (MGET in Lua), an expiry is set where a
 * write creates a key, the burst bucket is one "<level>:<ms>" string. The contract is
 * lua/admit.v5.lua.
 */

/** ARGV[13..21], in order. */
const LIMIT_NAMES = [
  'tenantRpm',
  'userRpm',
  'channelRpm',
  'keyRpm',
  'burstCapacity',
  'burstRefillPerMinute',
  'keyTpd',
  'tenantMonthlyCapMicro',
  'keyMonthlyCapMicro',
] as const;

export const admit: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const [tenant, keyId, user, channel, pool, idem, resId] = [0, 1, 2, 3, 4, 5, 6].map((i) =>
    arg(args, i),
  ) as [string, string, string, string, string, string, string];
  if (!ident(tenant, false) || !base.endsWith(`{t:${tenant}}`)) return ['INVALID_INPUT', 'tenantId'];
  if (!ident(keyId, false)) return ['INVALID_INPUT', 'keyId'];
  if (!ident(user, true)) return ['INVALID_INPUT', 'userId'];
  if (!ident(channel, true)) return ['INVALID_INPUT', 'channelId'];
  if (!ident(pool, false)) return ['INVALID_INPUT', 'pool'];
  if (!ident(idem, true)) return ['INVALID_INPUT', 'idempotencyKey'];
  if (!ident(resId, false)) return ['INVALID_INPUT', 'reservationId'];
  const figures = ints(args, 7, ['costMicro', 'tokenEstimate', 'nowMs', 'ttlMs']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const { costMicro: cost, tokenEstimate: tokens, nowMs: now, ttlMs: ttl } = figures;
  const period = arg(args, 11);
  if (!/^\d{6}$/.test(period)) return ['INVALID_INPUT', 'period'];
  const limits = ints(args, 12, LIMIT_NAMES);
  if (typeof limits === 'string') return ['INVALID_INPUT', limits];

  const resKey = tenantKeys.reservation(base, resId);
  const [resState, resKeyId, resAmount] = kv.hmget(resKey, 'state', 'keyId', 'amount');
  // Cancelled before this admit ran (its cancel came first): reserve nothing.
  if (resState === 'cancelled') return ['CANCELLED'];

  const [balKey, monthKey, keyMonthKey] = tenantKeys.scopes(base, keyId, period);
  // An absent balance is an emptied store, not zero credits: rebuild it from the book first.
  if (!kv.exists(balKey)) return ['HYDRATE'];

  // A monthly counter is read only when its cap applies (every figure that uses it is).
  const scopes = () => {
    const bal = balanceOf(kv, base);
    const m = limits.tenantMonthlyCapMicro >= 0 ? kv.hmget(monthKey, 'committed', 'reserved') : [];
    const km = limits.keyMonthlyCapMicro >= 0 ? kv.hmget(keyMonthKey, 'committed', 'reserved') : [];
    return {
      credited: bal.credited,
      balanceUsed: bal.committed + bal.reserved,
      monthUsed: num(m[0]) + num(m[1]),
      keyMonthUsed: num(km[0]) + num(km[1]),
    };
  };
  const remainingOf = (s: ReturnType<typeof scopes>, extra: number): [number, number, number] => {
    const balance = s.credited - s.balanceUsed - extra;
    const month = limits.tenantMonthlyCapMicro >= 0 ? limits.tenantMonthlyCapMicro - s.monthUsed - extra : -1;
    const keyMonth = limits.keyMonthlyCapMicro >= 0 ? limits.keyMonthlyCapMicro - s.keyMonthUsed - extra : -1;
    return [balance, month, keyMonth];
  };

  const reported = (s: ReturnType<typeof scopes>, extra: number): [number, number, number] => {
    const [balance, month, keyMonth] = remainingOf(s, extra);
    return [
      balance,
      limits.tenantMonthlyCapMicro >= 0 && month < 0 ? 0 : month,
      limits.keyMonthlyCapMicro >= 0 && keyMonth < 0 ? 0 : keyMonth,
    ];
  };

  const idemKey = tenantKeys.idempotency(base, keyId, idem);
  let priorRes: string | null = null;
  if (idem !== '') {
    const [res, expiresAt] = kv.hmget(idemKey, 'res', 'expiresAt');
    if (res && num(expiresAt) > now) priorRes = res;
  }
  if (priorRes === null && resKeyId) {
    if (resKeyId !== keyId || num(resAmount) !== cost) return ['INVALID_INPUT', 'reservationId'];
    priorRes = resId;
  }
  if (priorRes !== null) {
    const [amount, state] = kv.hmget(tenantKeys.reservation(base, priorRes), 'amount', 'state');
    return ['ALREADY_RESERVED', priorRes, num(amount), state ?? 'expired', ...reported(scopes(), 0)];
  }

  const idx = Math.floor(now / WINDOW_MS);
  const elapsed = now - idx * WINDOW_MS;
  const writes: (() => void)[] = [];
  let denied: Reply | null = null;
  // Of the denying dimensions, the one that frees up last sets the retry time.
  const deny = (name: string, limit: number, retryMs: number) => {
    const reply = rateLimited(name, limit, retryMs, now);
    if (denied === null || (reply[4] as number) > (denied[4] as number)) denied = reply;
  };
  let tightest = { name: '', limit: 0, remaining: 0, resetAt: 0 };
  const consider = (name: string, limit: number, remaining: number, resetAt: number) => {
    if (tightest.name === '' || remaining < tightest.remaining)
      tightest = { name, limit, remaining, resetAt };
  };

  const window = (name: string, subject: string, limit: number): void => {
    if (limit < 0) return;
    const prefix = `${base}:w:${name}:${subject}:`;
    const cur = num(kv.get(prefix + idx));
    const prev = num(kv.get(prefix + (idx - 1)));
    const used = cur * WINDOW_MS + prev * (WINDOW_MS - elapsed);
    const windowEnd = (idx + 1) * WINDOW_MS;
    if (used + WINDOW_MS > limit * WINDOW_MS) {
      let retry: number;
      if (limit === 0) retry = windowEnd - now;
      else if (cur + 1 <= limit)
        retry = WINDOW_MS - Math.floor(((limit - 1 - cur) * WINDOW_MS) / prev) - elapsed;
      else retry = windowEnd - now + WINDOW_MS - Math.floor(((limit - 1) * WINDOW_MS) / cur);
      deny(name, limit, retry);
      return;
    }
    consider(name, limit, Math.floor((limit * WINDOW_MS - used - WINDOW_MS) / WINDOW_MS), windowEnd);
    writes.push(() => {
      if (kv.incrBy(prefix + idx, 1) === 1) kv.pexpire(prefix + idx, 10 * WINDOW_MS);
    });
  };

  window('tenant', '*', limits.tenantRpm);
  if (user !== '') window('user', user, limits.userRpm);
  if (channel !== '') window('channel', channel, limits.channelRpm);

  if (limits.burstCapacity >= 0) {
    const burstKey = tenantKeys.burst(base, user === '' ? '*' : user);
    const capacity = limits.burstCapacity;
    const refill = Math.max(0, limits.burstRefillPerMinute);
    const scaledCap = capacity * WINDOW_MS;
    // "<level>:<ms>"; anything else reads as a full bucket.
    const [, storedLevel, storedTs] = /^(\d+):(\d+)$/.exec(kv.get(burstKey) ?? '') ?? [];
    let level = scaledCap;
    let ts = now;
    if (storedLevel !== undefined && storedTs !== undefined) {
      level = Number(storedLevel);
      ts = Number(storedTs);
      if (now > ts) {
        level = Math.min(scaledCap, level + (now - ts) * refill);
        ts = now;
      }
    }
    if (level < WINDOW_MS) {
      deny(
        'burst',
        capacity,
        refill > 0 && capacity >= 1 ? Math.ceil((WINDOW_MS - level) / refill) : WINDOW_MS,
      );
    } else {
      const after = level - WINDOW_MS;
      const full = refill > 0 ? Math.ceil((scaledCap - after) / refill) : 0;
      consider('burst', capacity, Math.floor(after / WINDOW_MS), now + full);
      writes.push(() => {
        kv.set(burstKey, `${after}:${ts}`, { pxMs: DAY_MS });
      });
    }
  }

  window('key_rpm', keyId, limits.keyRpm);

  const day = Math.floor(now / DAY_MS);
  const tpdKey = tenantKeys.tokensPerDay(base, keyId, day);
  if (limits.keyTpd >= 0) {
    const used = num(kv.get(tpdKey));
    const dayEnd = (day + 1) * DAY_MS;
    if (used + tokens > limits.keyTpd) {
      deny('key_tpd', limits.keyTpd, dayEnd - now);
    } else {
      consider('key_tpd', limits.keyTpd, limits.keyTpd - used - tokens, dayEnd);
    }
  }
  if (denied) return denied;

  const s = scopes();
  const [balance, month, keyMonth] = remainingOf(s, 0);
  const atLeastZero = (n: number) => (n < 0 ? 0 : n);
  if (cost > 0) {
    if (cost > balance) return ['BUDGET_EXCEEDED', 'balance', atLeastZero(balance), s.credited];
    if (limits.tenantMonthlyCapMicro >= 0 && cost > month) {
      return ['BUDGET_EXCEEDED', 'tenant_monthly', atLeastZero(month), limits.tenantMonthlyCapMicro];
    }
    if (limits.keyMonthlyCapMicro >= 0 && cost > keyMonth) {
      return ['BUDGET_EXCEEDED', 'key_monthly', atLeastZero(keyMonth), limits.keyMonthlyCapMicro];
    }
  }

  for (const write of writes) write();
  kv.hincrby(balKey, 'reserved', cost);
  kv.hincrby(monthKey, 'reserved', cost);
  kv.hincrby(keyMonthKey, 'reserved', cost);
  // The key's first request of the day (or its counter was 0): the day's expiry, and the monthly
  // counters' renewed.
  if (kv.incrBy(tpdKey, tokens) === tokens) {
    kv.pexpire(tpdKey, 2 * DAY_MS);
    kv.pexpire(monthKey, 400 * DAY_MS);
    kv.pexpire(keyMonthKey, 400 * DAY_MS);
  }
  const deadline = now + ttl;
  kv.hset(resKey, {
    state: 'open',
    keyId,
    pool,
    amount: cost,
    tokens,
    period,
    day,
    idem,
  });
  kv.zadd(tenantKeys.deadlines(base), deadline, resId);
  if (idem !== '') {
    kv.hset(idemKey, { res: resId, expiresAt: deadline });
    kv.pexpire(idemKey, ttl + RETAIN_MS);
  }

  const after = reported(s, cost);
  let warning = '';
  if (cost === 0) {
    // A free request reserved nothing, so it moved no scope.
  } else if (s.credited > 0 && (s.balanceUsed + cost) * 5 >= s.credited * 4) warning = 'balance';
  else if (limits.tenantMonthlyCapMicro > 0 && (s.monthUsed + cost) * 5 >= limits.tenantMonthlyCapMicro * 4) {
    warning = 'tenant_monthly';
  } else if (limits.keyMonthlyCapMicro > 0 && (s.keyMonthUsed + cost) * 5 >= limits.keyMonthlyCapMicro * 4) {
    warning = 'key_monthly';
  }
  return [
    'ADMITTED',
    resId,
    ...after,
    tightest.name,
    tightest.limit,
    tightest.remaining,
    tightest.resetAt,
    warning,
  ];
};
