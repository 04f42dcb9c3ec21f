import { MAX_AMOUNT_MICRO, MAX_BALANCE_MICRO, MAX_COUNT } from '../../budget/bounds.js';
import type { Reply } from '../port.js';
import type { ScriptName } from '../scripts.generated.js';
import type { MemoryKv } from './kv.js';

/**
 * The Lua scripts of lua/, line for line in TypeScript, for the embedded memory engine. Same
 * arguments (strings), same replies, same arithmetic (every figure is an integer below 2^53, so
 * doubles are exact in both). The differential property test runs both on the same operation
 * sequences and requires identical replies; change a script here and in lua/ together. Each
 * function ports the newest version of its script (the one the registry names).
 * Each function runs to completion synchronously, which is what makes it atomic.
 */

const MAX_AMOUNT = Number(MAX_AMOUNT_MICRO);
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const MAX_BALANCE = Number(MAX_BALANCE_MICRO);
const MAX_NOW = 2 ** 47;
const WINDOW_MS = 60_000;
const DAY_MS = 86_400_000;
const RETAIN_MS = 7 * DAY_MS;

type Script = (kv: MemoryKv, keys: string[], args: string[]) => Reply;

/** Canonical decimal integers only (no "-0", leading zeros, "+", spaces, hex or exponents). */
function int(value: string | undefined, min: number, max: number): number | null {
  if (value === undefined || value.length > 17) return null;
  if (value !== '0' && !/^-?[1-9]\d*$/.test(value)) return null;
  const n = Number(value);
  return n < min || n > max ? null : n;
}

function ident(value: string | undefined, optional: boolean): boolean {
  if (value === '') return optional;
  return value !== undefined && value.length <= 64 && /^[A-Za-z0-9_-]+$/.test(value);
}

function num(value: string | null): number {
  if (value === null) return 0;
  const n = Number(value);
  return Number.isNaN(n) ? 0 : n;
}

function arg(args: string[], index: number): string {
  return args[index] ?? '';
}

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

const admit: Script = (kv, keys, args) => {
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
  // admit v2: cost 0 is a free request (a sandbox key): rate-limited, but no budget scope applies.
  const cost = int(args[7], 0, MAX_AMOUNT);
  if (cost === null) return ['INVALID_INPUT', 'costMicro'];
  const tokens = int(args[8], 0, MAX_COUNT);
  if (tokens === null) return ['INVALID_INPUT', 'tokenEstimate'];
  const now = int(args[9], 1, MAX_NOW);
  if (now === null) return ['INVALID_INPUT', 'nowMs'];
  const ttl = int(args[10], 1000, DAY_MS);
  if (ttl === null) return ['INVALID_INPUT', 'ttlMs'];
  const period = arg(args, 11);
  if (!/^\d{6}$/.test(period)) return ['INVALID_INPUT', 'period'];
  const limits = {} as Record<(typeof LIMIT_NAMES)[number], number>;
  for (const [i, name] of LIMIT_NAMES.entries()) {
    const n = int(args[12 + i], -1, i >= 7 ? MAX_AMOUNT : MAX_COUNT);
    if (n === null) return ['INVALID_INPUT', name];
    limits[name] = n;
  }

  const balKey = `${base}:bal`;
  const monthKey = `${base}:m:${period}`;
  const keyMonthKey = `${base}:km:${keyId}:${period}`;

  const scopes = () => {
    const bal = kv.hmget(balKey, 'credited', 'committed', 'reserved');
    const m = kv.hmget(monthKey, 'committed', 'reserved');
    const km = kv.hmget(keyMonthKey, 'committed', 'reserved');
    return {
      credited: num(bal[0] ?? null),
      balanceUsed: num(bal[1] ?? null) + num(bal[2] ?? null),
      monthUsed: num(m[0] ?? null) + num(m[1] ?? null),
      keyMonthUsed: num(km[0] ?? null) + num(km[1] ?? null),
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

  const idemKey = `${base}:idem:${keyId}:${idem}`;
  let priorRes: string | null = null;
  if (idem !== '') {
    const [res, expiresAt] = kv.hmget(idemKey, 'res', 'expiresAt');
    if (res && num(expiresAt ?? null) > now) priorRes = res;
  }
  const resKey = `${base}:res:${resId}`;
  if (priorRes === null) {
    const [sameKey, sameAmount] = kv.hmget(resKey, 'keyId', 'amount');
    if (sameKey) {
      if (sameKey !== keyId || num(sameAmount ?? null) !== cost) return ['INVALID_INPUT', 'reservationId'];
      priorRes = resId;
    }
  }
  if (priorRes !== null) {
    const [amount, state] = kv.hmget(`${base}:res:${priorRes}`, 'amount', 'state');
    return ['ALREADY_RESERVED', priorRes, num(amount ?? null), state ?? 'expired', ...reported(scopes(), 0)];
  }

  const idx = Math.floor(now / WINDOW_MS);
  const elapsed = now - idx * WINDOW_MS;
  const writes: (() => void)[] = [];
  let denied: Reply | null = null;
  const deny = (name: string, limit: number, retryMs: number) => {
    const retry = retryMs < 1 ? 1 : retryMs;
    if (denied === null || retry > (denied[4] as number))
      denied = ['RATE_LIMITED', name, limit, 0, retry, now + retry];
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
      kv.incrBy(prefix + idx, 1);
      kv.pexpire(prefix + idx, 10 * WINDOW_MS);
    });
  };

  window('tenant', '*', limits.tenantRpm);
  if (user !== '') window('user', user, limits.userRpm);
  if (channel !== '') window('channel', channel, limits.channelRpm);

  if (limits.burstCapacity >= 0) {
    const burstKey = `${base}:burst:${user === '' ? '*' : user}`;
    const capacity = limits.burstCapacity;
    const refill = Math.max(0, limits.burstRefillPerMinute);
    const scaledCap = capacity * WINDOW_MS;
    const { level, ts } = refilled(kv, burstKey, scaledCap, refill, now);
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
      const finalTs = ts;
      writes.push(() => {
        kv.hset(burstKey, { level: after, ts: finalTs });
        kv.pexpire(burstKey, DAY_MS);
      });
    }
  }

  window('key_rpm', keyId, limits.keyRpm);

  const day = Math.floor(now / DAY_MS);
  const tpdKey = `${base}:tpd:${keyId}:${day}`;
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
  kv.incrBy(tpdKey, tokens);
  kv.pexpire(tpdKey, 2 * DAY_MS);
  kv.hincrby(balKey, 'reserved', cost);
  kv.hincrby(monthKey, 'reserved', cost);
  kv.pexpire(monthKey, 400 * DAY_MS);
  kv.hincrby(keyMonthKey, 'reserved', cost);
  kv.pexpire(keyMonthKey, 400 * DAY_MS);
  const deadline = now + ttl;
  kv.hset(resKey, {
    state: 'open',
    keyId,
    pool,
    amount: cost,
    tokens,
    period,
    day,
    deadline,
    createdAt: now,
    idem,
  });
  kv.zadd(`${base}:resz`, deadline, resId);
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

/**
 * A token bucket's level now (stored × 60000, so refill per ms is an integer): full when new,
 * refilled by the time since it was last written, never above capacity. (The Lua scripts inline
 * this in admit and pool_gate: EVAL has no includes.)
 */
function refilled(
  kv: MemoryKv,
  key: string,
  scaledCap: number,
  refill: number,
  now: number,
): { level: number; ts: number } {
  const [storedLevel, storedTs] = kv.hmget(key, 'level', 'ts');
  if (storedLevel === null || storedLevel === undefined) return { level: scaledCap, ts: now };
  const level = num(storedLevel);
  const ts = num(storedTs ?? null);
  if (now > ts) return { level: Math.min(scaledCap, level + (now - ts) * refill), ts: now };
  return { level, ts };
}

/**
 * Releases `amount` from the `reserved` field of each counter, clamping at 0; returns the drift.
 * A free reservation (amount 0, admit v2) writes nothing (budget_finalize v2, budget_reap v2).
 */
function release(kv: MemoryKv, counters: string[], amount: number): number {
  let drift = 0;
  if (amount === 0) return drift;
  for (const key of counters) {
    const reserved = num(kv.hget(key, 'reserved'));
    if (reserved < amount) {
      drift += amount - reserved;
      kv.hset(key, { reserved: 0 });
    } else {
      kv.hincrby(key, 'reserved', -amount);
    }
  }
  return drift;
}

const budgetFinalize: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const resId = arg(args, 0);
  if (!ident(resId, false)) return ['INVALID_INPUT', 'reservationId'];
  const actual = int(args[1], 0, MAX_AMOUNT);
  if (actual === null) return ['INVALID_INPUT', 'actualCostMicro'];
  const actualTokens = int(args[2], 0, MAX_COUNT);
  if (actualTokens === null) return ['INVALID_INPUT', 'actualTokens'];
  const now = int(args[3], 1, MAX_NOW);
  if (now === null) return ['INVALID_INPUT', 'nowMs'];

  const resKey = `${base}:res:${resId}`;
  const [state, amountRaw, tokensRaw, period, keyId, day, charged, idem] = kv.hmget(
    resKey,
    'state',
    'amount',
    'tokens',
    'period',
    'keyId',
    'day',
    'charged',
    'idem',
  );
  if (!state) return ['INVALID_INPUT', 'reservationId'];
  if (state === 'finalized') return ['ALREADY_FINALIZED', num(charged ?? null)];

  const amount = num(amountRaw ?? null);
  const estimate = num(tokensRaw ?? null);
  const charge = Math.min(actual, amount);
  const counters = [`${base}:bal`, `${base}:m:${period}`, `${base}:km:${keyId}:${period}`];
  let drift = 0;
  if (state === 'open') {
    drift = release(kv, counters, amount);
    kv.zrem(`${base}:resz`, resId);
  }
  for (const key of counters) kv.hincrby(key, 'committed', charge);

  const tpdKey = `${base}:tpd:${keyId}:${day}`;
  const used = kv.get(tpdKey);
  if (used !== null)
    kv.set(tpdKey, String(Math.max(0, num(used) + actualTokens - estimate)), { keepTtl: true });

  kv.hset(resKey, { state: 'finalized', charged: charge, finalizedAt: now });
  kv.pexpire(resKey, RETAIN_MS);
  // v2: a cancel (actual 0) frees the idempotency key; a settled free request keeps it.
  if (actual === 0 && idem) {
    const idemKey = `${base}:idem:${keyId}:${idem}`;
    if (kv.hget(idemKey, 'res') === resId) kv.del(idemKey);
  }
  if (state === 'open') return ['FINALIZED', charge, amount - charge, drift];

  const [credited, committed, reserved] = kv.hmget(`${base}:bal`, 'credited', 'committed', 'reserved');
  const overspend =
    charge > 0 && num(committed ?? null) + num(reserved ?? null) > num(credited ?? null) ? 1 : 0;
  return ['LATE_FINALIZE', charge, overspend, drift];
};

const budgetReap: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const now = int(args[0], 1, MAX_NOW);
  if (now === null) return ['INVALID_INPUT', 'nowMs'];
  const maxCount = int(args[1], 1, 1000);
  if (maxCount === null) return ['INVALID_INPUT', 'maxCount'];
  const indexKey = `${base}:resz`;
  let count = 0;
  let released = 0;
  let drift = 0;
  for (const resId of kv.zrangeByScoreUpTo(indexKey, now, maxCount)) {
    const resKey = `${base}:res:${resId}`;
    const [state, amountRaw, period, keyId] = kv.hmget(resKey, 'state', 'amount', 'period', 'keyId');
    if (state === 'open') {
      const amount = num(amountRaw ?? null);
      drift += release(kv, [`${base}:bal`, `${base}:m:${period}`, `${base}:km:${keyId}:${period}`], amount);
      kv.hset(resKey, { state: 'reaped', reapedAt: now });
      kv.pexpire(resKey, RETAIN_MS);
      count += 1;
      released += amount;
    }
    kv.zrem(indexKey, resId);
  }
  return ['REAPED', count, released, drift];
};

const MARKER_MS = 400 * DAY_MS;

/** budget_event v1: each 80 % / 100 % threshold reported once per scope, subject and period. */
const budgetEvent: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const resId = arg(args, 0);
  if (!ident(resId, false)) return ['INVALID_INPUT', 'reservationId'];
  const tenantCap = int(args[1], -1, MAX_AMOUNT);
  if (tenantCap === null) return ['INVALID_INPUT', 'tenantMonthlyCapMicro'];
  const keyCap = int(args[2], -1, MAX_AMOUNT);
  if (keyCap === null) return ['INVALID_INPUT', 'keyMonthlyCapMicro'];

  const [period, keyId] = kv.hmget(`${base}:res:${resId}`, 'period', 'keyId');
  if (!period || !keyId) return ['INVALID_INPUT', 'reservationId'];

  // used * 5 >= limit * 4, as used >= 4 * (limit - used): no intermediate figure passes 2^53.
  const reached = (used: number, limit: number, percent: number) =>
    used >= limit || (percent === 80 && used >= 4 * (limit - used));
  const out: Reply = ['THRESHOLDS', 0];
  const check = (scope: string, marker: string, periodName: string, used: number, limit: number) => {
    if (limit <= 0) return;
    for (const percent of [80, 100]) {
      if (
        reached(used, limit, percent) &&
        kv.set(`${marker}:${percent}`, '1', { nx: true, pxMs: MARKER_MS })
      ) {
        out[1] = (out[1] as number) + 1;
        out.push(scope, percent, periodName, used, limit);
      }
    }
  };

  const [credited, committed] = kv.hmget(`${base}:bal`, 'credited', 'committed');
  const creditedText = credited ?? '0';
  check(
    'balance',
    `${base}:bev:bal:${creditedText}`,
    `credited:${creditedText}`,
    num(committed ?? null),
    num(creditedText),
  );
  if (tenantCap > 0) {
    const used = num(kv.hget(`${base}:m:${period}`, 'committed'));
    check('tenant_monthly', `${base}:bev:m:${period}`, period, used, tenantCap);
  }
  if (keyCap > 0) {
    const used = num(kv.hget(`${base}:km:${keyId}:${period}`, 'committed'));
    check('key_monthly', `${base}:bev:km:${keyId}:${period}`, period, used, keyCap);
  }
  return out;
};

const credit: Script = (kv, keys, args) => {
  const base = keys[0] ?? '';
  const grantId = arg(args, 0);
  if (!ident(grantId, false)) return ['INVALID_INPUT', 'grantId'];
  const raw = arg(args, 1);
  const amount = raw.length <= 17 && /^[1-9]\d*$/.test(raw) ? Number(raw) : null;
  if (amount === null || amount < 1 || amount > MAX_AMOUNT) return ['INVALID_INPUT', 'amountMicro'];
  const balKey = `${base}:bal`;
  const figures = (): [number, number] => {
    const [credited, committed, reserved] = kv.hmget(balKey, 'credited', 'committed', 'reserved');
    const c = num(credited ?? null);
    return [c, c - num(committed ?? null) - num(reserved ?? null)];
  };
  const applied = kv.hget(`${base}:grants`, grantId);
  if (applied !== null) {
    if (Number(applied) !== amount) return ['INVALID_INPUT', 'grantId'];
    return ['ALREADY_APPLIED', ...figures()];
  }
  if (figures()[0] + amount > MAX_BALANCE) return ['INVALID_INPUT', 'amountMicro'];
  kv.hset(`${base}:grants`, { [grantId]: amount });
  kv.hincrby(balKey, 'credited', amount);
  return ['CREDITED', ...figures()];
};

const snapshot: Script = (kv, keys) => {
  const [credited, committed, reserved] = kv
    .hmget(`${keys[0] ?? ''}:bal`, 'credited', 'committed', 'reserved')
    .map((value) => num(value ?? null)) as [number, number, number];
  return ['SNAPSHOT', credited, committed, reserved, credited - committed - reserved];
};

const poolGate: Script = (kv, keys, args) => {
  const tokens = int(args[0], 1, MAX_COUNT);
  if (tokens === null) return ['INVALID_INPUT', 'tokens'];
  const capacity = int(args[1], 1, MAX_COUNT);
  if (capacity === null) return ['INVALID_INPUT', 'capacity'];
  const refill = int(args[2], 0, MAX_COUNT);
  if (refill === null) return ['INVALID_INPUT', 'refillPerMinute'];
  const now = int(args[3], 1, MAX_NOW);
  if (now === null) return ['INVALID_INPUT', 'nowMs'];
  const key = `${keys[0] ?? ''}:bucket`;
  const { level, ts } = refilled(kv, key, capacity * WINDOW_MS, refill, now);
  const need = tokens * WINDOW_MS;
  if (level < need) {
    let retry = refill > 0 && tokens <= capacity ? Math.ceil((need - level) / refill) : WINDOW_MS;
    if (retry < 1) retry = 1;
    return ['RATE_LIMITED', 'pool', capacity, 0, retry, now + retry];
  }
  kv.hset(key, { level: level - need, ts });
  kv.pexpire(key, DAY_MS);
  return ['ALLOWED', Math.floor((level - need) / WINDOW_MS)];
};

const leaseAcquire: Script = (kv, keys, args) => {
  const holder = arg(args, 0);
  if (holder.length < 1 || holder.length > 128 || !/^[A-Za-z0-9_.:-]+$/.test(holder)) {
    return ['INVALID_INPUT', 'holder'];
  }
  const rawTtl = arg(args, 1);
  const ttl = rawTtl.length <= 7 && /^[1-9]\d*$/.test(rawTtl) ? Number(rawTtl) : null;
  if (ttl === null || ttl < 100 || ttl > 3_600_000) return ['INVALID_INPUT', 'ttlMs'];
  const leaseKey = `${keys[0] ?? ''}:lease`;
  const tokenKey = `${keys[0] ?? ''}:token`;
  const current = kv.get(tokenKey);
  if (current !== null && (!/^\d+$/.test(current) || current.length > 16 || Number(current) >= MAX_SAFE)) {
    return ['OVERFLOW'];
  }
  if (!kv.set(leaseKey, holder, { nx: true, pxMs: ttl }))
    return ['HELD', kv.get(leaseKey) ?? '', kv.pttl(leaseKey)];
  kv.incrBy(tokenKey, 1);
  return ['ACQUIRED', kv.get(tokenKey) ?? ''];
};

const leaseRelease: Script = (kv, keys, args) => {
  const leaseKey = `${keys[0] ?? ''}:lease`;
  if (kv.get(leaseKey) === args[0]) {
    kv.del(leaseKey);
    return ['RELEASED'];
  }
  return ['NOT_HELD'];
};

const fencingCas: Script = (kv, keys, args) => {
  const raw = arg(args, 0);
  if (raw.length > 16 || !(raw === '0' || /^[1-9]\d*$/.test(raw)) || Number(raw) > MAX_SAFE) {
    return ['INVALID_INPUT', 'fencingToken'];
  }
  const token = Number(raw);
  const fenceKey = `${keys[0] ?? ''}:fence`;
  const stored = kv.get(fenceKey);
  if (stored !== null) {
    if (!/^\d+$/.test(stored) || stored.length > 16 || Number(stored) > MAX_SAFE) return ['CORRUPT'];
    if (token <= Number(stored)) return ['STALE', stored];
  }
  if (kv.get(`${keys[0] ?? ''}:token`) !== raw || !kv.exists(`${keys[0] ?? ''}:lease`))
    return ['STALE', stored ?? ''];
  kv.set(fenceKey, raw);
  return ['OK'];
};

const epoch: Script = (kv, keys, args) => {
  const key = `${keys[0] ?? ''}:epoch`;
  if (args[0] === 'bump') kv.incrBy(key, 1);
  else if (args[0] !== 'get') return ['INVALID_INPUT', 'op'];
  return ['EPOCH', kv.get(key) ?? '0'];
};

export const MEMORY_SCRIPTS: Record<ScriptName, Script> = {
  epoch,
  admit,
  budget_finalize: budgetFinalize,
  budget_reap: budgetReap,
  budget_event: budgetEvent,
  credit,
  snapshot,
  pool_gate: poolGate,
  lease_acquire: leaseAcquire,
  lease_release: leaseRelease,
  fencing_cas: fencingCas,
};
