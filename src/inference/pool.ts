import type { VerifiedKey } from '../keys/verifier.js';
import { isPool, POOLS, type Pool } from '../pricing/pricing.js';
import { type TierTable, tierLimits } from '../tenants/tiers.js';

export interface PoolDecision {
  requested: string;
  pool: Pool;
  reason: 'as_requested' | 'sandbox' | 'tier' | 'default';
}

/**
 * Which pool serves the request: sandbox keys get `cheap`; otherwise the tier's pools. A pool the
 * caller may not use is replaced by the best allowed one (the decision says why); a name that is
 * no pool at all gives `undefined` (the caller refuses it).
 */
export function choosePool(
  tiers: TierTable,
  key: VerifiedKey,
  requested: string | undefined,
): PoolDecision | undefined {
  const allowed: readonly Pool[] = key.sandbox ? ['cheap'] : tierLimits(tiers, key.tenantTier).pools;
  const best = allowed.at(-1) ?? 'cheap';
  if (requested === undefined) {
    const pool = allowed.includes('standard') ? 'standard' : best;
    return { requested: 'default', pool, reason: 'default' };
  }
  if (!isPool(requested)) return undefined;
  if (allowed.includes(requested)) return { requested, pool: requested, reason: 'as_requested' };
  // The best allowed pool below the one asked for (pools are ordered cheapest first).
  const below = allowed.filter((pool) => POOLS.indexOf(pool) < POOLS.indexOf(requested));
  return { requested, pool: below.at(-1) ?? best, reason: key.sandbox ? 'sandbox' : 'tier' };
}
