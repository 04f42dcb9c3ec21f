import { MAX_AMOUNT_MICRO, MAX_COUNT } from '../../../budget/bounds.js';
import type { Reply } from '../../port.js';
import type { MemoryKv } from '../kv.js';

/**
 * What several memory scripts use: the argument checks, the figures and key names of the Lua
 * scripts, and the steps the Lua scripts repeat in each file because EVAL has no includes.
 */

/** A script: its Lua twin's KEYS and ARGV (strings) in, the same reply out. */
export type Script = (kv: MemoryKv, keys: string[], args: string[]) => Reply;

export const MAX_AMOUNT = Number(MAX_AMOUNT_MICRO);
// 2^47 ms is the year 6429: times stay far below 2^52 even with a day added.
const MAX_NOW = 2 ** 47;
export const WINDOW_MS = 60_000;
export const DAY_MS = 86_400_000;
export const RETAIN_MS = 7 * DAY_MS;

/** Canonical decimal integers only (no "-0", leading zeros, "+", spaces, hex or exponents). */
function int(value: string | undefined, min: number, max: number): number | null {
  if (value === undefined || value.length > 17) return null;
  if (value !== '0' && !/^-?[1-9]\d*$/.test(value)) return null;
  const n = Number(value);
  return n < min || n > max ? null : n;
}

/**
 * The bounds of every integer argument `ints` reads, by the field name its refusal replies with;
 * a name means the same range in every script that reads it (the Lua headers give the same).
 */
const INT_ARGS = {
  costMicro: [0, MAX_AMOUNT],
  actualCostMicro: [0, MAX_AMOUNT],
  tokenEstimate: [0, MAX_COUNT],
  actualTokens: [0, MAX_COUNT],
  promptTokens: [0, MAX_COUNT],
  completionTokens: [0, MAX_COUNT],
  nowMs: [1, MAX_NOW],
  /** Only outbox entries appended before this time (outbox_read). */
  olderThanMs: [1, MAX_NOW],
  /** A reservation's lifetime (admit). */
  ttlMs: [1000, DAY_MS],
  maxCount: [1, 1000],
  /** Entries read from an outbox at once (outbox_read). */
  count: [1, 1000],
  /** The tenant index: a page's size, and the last active time a pruned tenant must not pass. */
  limit: [1, 1000],
  cutoffMs: [0, MAX_NOW],
  tokens: [1, MAX_COUNT],
  capacity: [1, MAX_COUNT],
  refillPerMinute: [0, MAX_COUNT],
  // Limits: -1 = not limited.
  tenantRpm: [-1, MAX_COUNT],
  userRpm: [-1, MAX_COUNT],
  channelRpm: [-1, MAX_COUNT],
  keyRpm: [-1, MAX_COUNT],
  burstCapacity: [-1, MAX_COUNT],
  burstRefillPerMinute: [-1, MAX_COUNT],
  keyTpd: [-1, MAX_COUNT],
  tenantMonthlyCapMicro: [-1, MAX_AMOUNT],
  keyMonthlyCapMicro: [-1, MAX_AMOUNT],
} as const;

export type IntArg = keyof typeof INT_ARGS;

/**
 * The integer arguments args[from], args[from + 1], … named by `names`, in order, each read with
 * `int` within its INT_ARGS bounds: their values by name, or the name of the first one refused.
 */
export function ints<const N extends readonly IntArg[]>(
  args: string[],
  from: number,
  names: N,
): Record<N[number], number> | IntArg {
  const values = {} as Record<N[number], number>;
  for (const [i, name] of names.entries()) {
    const [min, max] = INT_ARGS[name];
    const n = int(args[from + i], min, max);
    if (n === null) return name;
    values[name as N[number]] = n;
  }
  return values;
}

/** An id: 1 to 64 of [A-Za-z0-9_-], or "" where `optional`. */
export function ident(value: string | undefined, optional: boolean): boolean {
  if (value === '') return optional;
  return value !== undefined && value.length <= 64 && /^[A-Za-z0-9_-]+$/.test(value);
}

/** A stored figure as Lua's `tonumber(value) or 0` reads it. */
export function num(value: string | null | undefined): number {
  if (value === null || value === undefined) return 0;
  const n = Number(value);
  return Number.isNaN(n) ? 0 : n;
}

/** ARGV[index + 1], "" when absent. */
export function arg(args: string[], index: number): string {
  return args[index] ?? '';
}

/** The keys below a tenant base key `{t:<tenantId>}` that more than one script reads or writes. */
export const tenantKeys = {
  balance: (base: string) => `${base}:bal`,
  /** The budget counters a reservation moves: balance, tenant month, key month. */
  scopes: (base: string, keyId: string | null | undefined, period: string | null | undefined) =>
    [`${base}:bal`, `${base}:m:${period}`, `${base}:km:${keyId}:${period}`] as const,
  reservation: (base: string, resId: string) => `${base}:res:${resId}`,
  /** Open reservations by deadline, for the reaper. */
  deadlines: (base: string) => `${base}:resz`,
  idempotency: (base: string, keyId: string | null | undefined, idem: string) =>
    `${base}:idem:${keyId}:${idem}`,
  tokensPerDay: (base: string, keyId: string | null | undefined, day: string | number | null | undefined) =>
    `${base}:tpd:${keyId}:${day}`,
  /** A user's burst bucket (`*`: the tenant's, for requests without a user): "<level>:<ms>". */
  burst: (base: string, subject: string) => `${base}:bk:${subject}`,
  /** Settlements waiting to be written to PostgreSQL (budget_finalize appends, outbox_ack deletes). */
  outbox: (base: string) => `${base}:outbox`,
};

/**
 * The tenant index `{i:tenants}`: the sorted set tenant id -> last active ms itself, and `:ids`,
 * the same ids at score 0, listed in byte order for paging.
 */
export function indexKeys(base: string | undefined): { lastActive: string; ids: string } {
  const root = base ?? '';
  return { lastActive: root, ids: `${root}:ids` };
}

/** The keys below a lease base key `{l:<resource>}`. */
export function leaseKeys(base: string | undefined): { lease: string; token: string; fence: string } {
  const root = base ?? '';
  return { lease: `${root}:lease`, token: `${root}:token`, fence: `${root}:fence` };
}

/** A tenant's balance counters, 0 where unset. */
export function balanceOf(
  kv: MemoryKv,
  base: string,
): { credited: number; committed: number; reserved: number } {
  const [credited, committed, reserved] = kv.hmget(
    tenantKeys.balance(base),
    'credited',
    'committed',
    'reserved',
  );
  return { credited: num(credited), committed: num(committed), reserved: num(reserved) };
}

/** The RATE_LIMITED reply: retry in at least 1 ms; reset at the first instant the request can pass. */
export function rateLimited(dimension: string, limit: number, retryMs: number, now: number): Reply {
  const retry = retryMs < 1 ? 1 : retryMs;
  return ['RATE_LIMITED', dimension, limit, 0, retry, now + retry];
}

/**
 * A token bucket's level now (stored × 60000, so refill per ms is an integer): full when new,
 * refilled by the time since it was last written, never above capacity. (The Lua scripts inline
 * this in pool_gate.)
 */
export function refilled(
  kv: MemoryKv,
  key: string,
  scaledCap: number,
  refill: number,
  now: number,
): { level: number; ts: number } {
  const [storedLevel, storedTs] = kv.hmget(key, 'level', 'ts');
  if (storedLevel === null || storedLevel === undefined) return { level: scaledCap, ts: now };
  const level = num(storedLevel);
  const ts = num(storedTs);
  if (now > ts) return { level: Math.min(scaledCap, level + (now - ts) * refill), ts: now };
  return { level, ts };
}

/**
 * Releases `amount` from the `reserved` field of each counter, clamping at 0; returns the drift.
 * A free reservation (amount 0) writes nothing. (The Lua scripts inline this in budget_finalize
 * and budget_reap.)
 */
export function release(kv: MemoryKv, counters: readonly string[], amount: number): number {
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
