import * as v from 'valibot';
import { jsonSetting } from '../json-setting.js';
import { POOLS, type Pool } from '../pricing/pricing.js';

/** What a tenant's tier allows (DESIGN.md §6): request rates per minute, the burst bucket, pools. */
export interface TierLimits {
  tenantRpm: number;
  userRpm: number;
  channelRpm: number;
  /** Requests one user (or the tenant, without a user) may send at once; refills this many per second. */
  burstCapacity: number;
  pools: readonly Pool[];
}

/** Tiers 1–9, index 0 is tier 1. */
export type TierTable = readonly TierLimits[];

// Tier defaults: 1–3 free, 4–6 pro, 7–9 enterprise.
const FREE: TierLimits = {
  tenantRpm: 60,
  userRpm: 10,
  channelRpm: 20,
  burstCapacity: 3,
  pools: ['cheap', 'standard'],
};
const PRO: TierLimits = {
  tenantRpm: 300,
  userRpm: 30,
  channelRpm: 60,
  burstCapacity: 5,
  pools: ['cheap', 'standard', 'reasoning'],
};
const ENTERPRISE: TierLimits = {
  tenantRpm: 1_000,
  userRpm: 100,
  channelRpm: 200,
  burstCapacity: 10,
  pools: ['cheap', 'standard', 'reasoning', 'architect', 'flagship'],
};

export const DEFAULT_TIERS: TierTable = [FREE, FREE, FREE, PRO, PRO, PRO, ENTERPRISE, ENTERPRISE, ENTERPRISE];

/** The largest rate `TIERS` accepts: far below the engine's bound on a count (MAX_COUNT). */
export const MAX_TIER_RATE = 10_000_000;

const Rate = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_TIER_RATE));
const Override = v.strictObject({
  tenantRpm: v.optional(Rate),
  userRpm: v.optional(Rate),
  channelRpm: v.optional(Rate),
  burstCapacity: v.optional(Rate),
  pools: v.optional(v.pipe(v.array(v.picklist(POOLS)), v.minLength(1))),
});

/**
 * `TIERS`: a JSON object from tier ("1".."9") to the limits that differ from the defaults, e.g.
 * `{"2":{"pools":["cheap"]},"9":{"tenantRpm":100000}}`. Pools are kept in price order, whatever
 * order they were written in, so "the best allowed pool" stays the most expensive one.
 */
export const TiersOverride = v.pipe(
  jsonSetting('must be a JSON object'),
  v.record(v.picklist(['1', '2', '3', '4', '5', '6', '7', '8', '9']), Override),
  v.transform(
    (overrides): TierTable =>
      DEFAULT_TIERS.map((defaults, index) => {
        const override = overrides[String(index + 1) as '1'] ?? {};
        const pools =
          override.pools === undefined
            ? defaults.pools
            : POOLS.filter((pool) => override.pools?.includes(pool));
        return {
          tenantRpm: override.tenantRpm ?? defaults.tenantRpm,
          userRpm: override.userRpm ?? defaults.userRpm,
          channelRpm: override.channelRpm ?? defaults.channelRpm,
          burstCapacity: override.burstCapacity ?? defaults.burstCapacity,
          pools,
        };
      }),
  ),
);

export function tierLimits(tiers: TierTable, tier: number): TierLimits {
  return tiers[Math.min(Math.max(tier, 1), 9) - 1] ?? FREE;
}
