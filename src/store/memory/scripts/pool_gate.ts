import { DAY_MS, ints, rateLimited, refilled, type Script, WINDOW_MS } from './shared.js';

/**
 * pool_gate: a global token bucket per pool that protects an upstream across all tenants, run
 * after admit (a denial means the caller cancels the fresh reservation). The contract is
 * lua/pool_gate.v1.lua.
 */
export const poolGate: Script = (kv, keys, args) => {
  const figures = ints(args, 0, ['tokens', 'capacity', 'refillPerMinute', 'nowMs']);
  if (typeof figures === 'string') return ['INVALID_INPUT', figures];
  const { tokens, capacity, refillPerMinute: refill, nowMs: now } = figures;
  const key = `${keys[0] ?? ''}:bucket`;
  const { level, ts } = refilled(kv, key, capacity * WINDOW_MS, refill, now);
  const need = tokens * WINDOW_MS;
  if (level < need) {
    const retry = refill > 0 && tokens <= capacity ? Math.ceil((need - level) / refill) : WINDOW_MS;
    return rateLimited('pool', capacity, retry, now);
  }
  kv.hset(key, { level: level - need, ts });
  kv.pexpire(key, DAY_MS);
  return ['ALLOWED', Math.floor((level - need) / WINDOW_MS)];
};
