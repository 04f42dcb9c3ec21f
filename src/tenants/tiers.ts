import type { Pool } from '../pricing/pricing.js';

/** Tier defaults (DESIGN.md §6): tiers 1–3 free, 4–6 pro, 7–9 enterprise. Per minute. */
export interface TierLimits {
  tenantRpm: number;
  userRpm: number;
  channelRpm: number;
  burstCapacity: number;
  pools: readonly Pool[];
}

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

export function tierLimits(tier: number): TierLimits {
  if (tier >= 7) return ENTERPRISE;
  if (tier >= 4) return PRO;
  return FREE;
}
