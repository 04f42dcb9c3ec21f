import { expect } from 'vitest';
import type { FinalizeResult } from '../../src/store/contracts.js';
import type { Store } from '../../src/store/typed-store.js';
import { admitInput, NO_LIMITS, NOW, spendUsage, startBalance } from './engines.js';

/** A tiny seeded PRNG (mulberry32), so a failing interleaving can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export interface ReaperRaceOptions {
  seed: number;
  /** Tenant ids are `${tenantPrefix}_${i}`: unique per call. */
  tenantPrefix: string;
  tenants: number;
  reservations: number;
}

export interface ReaperRaceOutcome {
  /** Finalizes that claimed an open reservation (the reaper came later or not at all). */
  finalized: number;
  /** Finalizes that found the reservation already reaped. */
  lateFinalized: number;
  /** Reservations the reaper released (the sum of every reap's count). */
  reaped: number;
}

const TTL_MS = 1_000;
const COST = 100n;
const CREDIT = 1_000_000_000n;
/** Past every reservation's deadline (admit nowMs + ttlMs), so each one is due for the reaper. */
const PAST_DEADLINE = NOW + TTL_MS + 1;

/**
 * Admits reservations (1 s TTL), then starts one finalize and one reap per reservation together, at
 * an instant past every deadline, in a seeded random order, each on a randomly picked store (a
 * separate connection for Redis). Expects what holds whatever the interleaving: each reservation
 * released exactly once (FINALIZED xor reaped, a finalize after the reap being LATE_FINALIZE and
 * still charging), committed = the charges the finalizes reported, reserved back to 0, no drift.
 */
export async function raceFinalizeAgainstReaper(
  stores: Store[],
  options: ReaperRaceOptions,
): Promise<ReaperRaceOutcome> {
  const random = prng(options.seed);
  const pick = () => stores[Math.floor(random() * stores.length)] as Store;
  const tenants = Array.from({ length: options.tenants }, (_, i) => `${options.tenantPrefix}_${i}`);
  await Promise.all(tenants.map((tenantId) => startBalance(pick(), tenantId)));
  await Promise.all(
    tenants.map((tenantId) => pick().credit({ tenantId, grantId: 'g', amountMicro: CREDIT })),
  );

  const reservations = await Promise.all(
    Array.from({ length: options.reservations }, async (_, i) => {
      const tenantId = tenants[i % tenants.length] as string;
      // Drawn before any await, so the seed alone decides every figure and order.
      const actual = BigInt(Math.floor(random() * 150));
      const result = await pick().admit(
        admitInput(tenantId, { costMicro: COST, ttlMs: TTL_MS, limits: NO_LIMITS }),
      );
      if (result.status !== 'ADMITTED') throw new Error(`admit: ${result.status}`);
      return { tenantId, reservationId: result.reservationId, actual };
    }),
  );

  // One finalize and one reap per reservation, shuffled (Fisher-Yates) so either may be sent first.
  const operations = reservations.flatMap((_, index) => [
    { kind: 'finalize' as const, index },
    { kind: 'reap' as const, index },
  ]);
  for (let i = operations.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [operations[i], operations[j]] = [
      operations[j] as (typeof operations)[number],
      operations[i] as (typeof operations)[number],
    ];
  }
  const finalizes: FinalizeResult[] = new Array(reservations.length);
  const reaps = await Promise.all(
    operations.map(async ({ kind, index }) => {
      const { tenantId, reservationId, actual } = reservations[index] as (typeof reservations)[number];
      const store = pick();
      if (kind === 'reap') return store.reap({ tenantId, nowMs: PAST_DEADLINE });
      finalizes[index] = await store.finalize({
        tenantId,
        reservationId,
        actualCostMicro: actual,
        spend: spendUsage(1),
        nowMs: PAST_DEADLINE,
      });
      return null;
    }),
  );

  const outcome: ReaperRaceOutcome = { finalized: 0, lateFinalized: 0, reaped: 0 };
  const charged = new Map<string, bigint>(tenants.map((tenantId) => [tenantId, 0n]));
  let releasedByReaper = 0n;
  for (const [index, result] of finalizes.entries()) {
    const { tenantId, actual } = reservations[index] as (typeof reservations)[number];
    if (result.status !== 'FINALIZED' && result.status !== 'LATE_FINALIZE') {
      throw new Error(`finalize of reservation ${index}: ${result.status}`);
    }
    expect(result.driftMicro).toBe(0n);
    expect(result.chargedMicro).toBe(actual < COST ? actual : COST);
    if (result.status === 'LATE_FINALIZE') expect(result.overspend).toBe(false);
    outcome[result.status === 'FINALIZED' ? 'finalized' : 'lateFinalized'] += 1;
    charged.set(tenantId, (charged.get(tenantId) as bigint) + result.chargedMicro);
  }
  for (const reap of reaps) {
    if (reap === null) continue;
    if (reap.status !== 'REAPED') throw new Error(`reap: ${reap.status}`);
    expect(reap.driftMicro).toBe(0n);
    outcome.reaped += reap.count;
    releasedByReaper += reap.releasedMicro;
  }
  // Exactly once: the reaper released precisely the reservations whose finalize came late.
  expect(outcome.reaped).toBe(outcome.lateFinalized);
  expect(outcome.finalized + outcome.reaped).toBe(reservations.length);
  expect(releasedByReaper).toBe(BigInt(outcome.reaped) * COST);
  for (const tenantId of tenants) {
    const committed = charged.get(tenantId) as bigint;
    expect(await pick().snapshot(tenantId)).toEqual({
      creditedMicro: CREDIT,
      committedMicro: committed,
      reservedMicro: 0n,
      availableMicro: CREDIT - committed,
      // Every charge came from a finalize: all of it waits in the outbox (nothing drains here).
      outboxMicro: committed,
      present: true,
    });
  }
  return outcome;
}
