import type { AdmitLimits } from '../../src/store/contracts.js';

/** A positive number from the environment (BENCH_* settings), or the fallback when unset. */
export function positive(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!(value > 0)) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

/** No limit in force: the benches measure the engine's work, never a denial. */
export const NO_LIMITS: AdmitLimits = {
  tenantRpm: null,
  userRpm: null,
  channelRpm: null,
  keyRpm: null,
  burstCapacity: null,
  burstRefillPerMinute: 0,
  keyTpd: null,
  tenantMonthlyCapMicro: null,
  keyMonthlyCapMicro: null,
};

/** Limits as a tier sets them (every dimension counted), too high to deny anything in a bench. */
export const TIER_LIMITS: AdmitLimits = {
  tenantRpm: 1_000_000_000,
  userRpm: 1_000_000_000,
  channelRpm: 1_000_000_000,
  keyRpm: 1_000_000_000,
  burstCapacity: 1_000_000,
  burstRefillPerMinute: 60_000_000,
  keyTpd: 1_000_000_000,
  tenantMonthlyCapMicro: 10n ** 15n,
  keyMonthlyCapMicro: 10n ** 15n,
};
