import type { VerifiedKey } from '../keys/verifier.js';
import type { SpendEntry } from '../ledger/spend.js';
import { costMicro, type Pool, type Prices } from '../pricing/pricing.js';
import type { Services } from '../services.js';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/**
 * Settles the reservation with what was delivered (prompt included): one engine call, charged
 * min(actual, reserved). Called exactly once per admitted request, in `finally`.
 */
export interface Settlement {
  tenantId: string;
  keyId: string;
  reservationId: string;
  pool: Pool;
  usage: Usage;
  /**
   * A sandbox key's request (DESIGN.md §6): admitted with a zero reservation, so it is charged
   * nothing; its spend row carries the notional cost (the usage at the pool's price).
   */
  free: boolean;
  /** The monthly caps in force, for the budget threshold check after settlement. */
  caps: { tenantMonthlyCapMicro: bigint | null; keyMonthlyCapMicro: bigint | null };
  /**
   * Admission said this reservation took a scope to 80 % or more. Only then is the threshold
   * check (one more store call) made, so a request far from every threshold costs two round
   * trips. A crossing made by a settlement admitted below 80 % (others settled meanwhile) is
   * reported by the next settlement in that scope, whose admission sees it.
   */
  nearThreshold: boolean;
}

/** What a settlement charged and, for a free one, what it would have cost. */
export interface Settled {
  costMicro: bigint;
  /** Free (sandbox) settlements only: the usage at the pool's price, charged 0. */
  notionalCostMicro?: bigint;
}

/** The settlement fields a key decides: whether it is free, and the caps. */
export function settlementTerms(key: VerifiedKey): Pick<Settlement, 'free' | 'caps'> {
  return {
    free: key.sandbox,
    caps: { tenantMonthlyCapMicro: key.tenantMonthlyCapMicro, keyMonthlyCapMicro: key.monthlyCapMicro },
  };
}

/** What the usage costs at the pool's price (the reservation caps what is charged). */
export function actualCost(pool: Pool, usage: Usage, prices: Prices): bigint {
  return costMicro(pool, usage.promptTokens + usage.completionTokens, prices);
}

/**
 * The spend row. `cost` is what the request cost: what was charged (or, before settlement, what
 * is to be charged at most); for a free settlement, the notional cost — the row is marked `free`
 * and the settlement job (SpendRecorder.settleUnsettled) charges such a row nothing.
 */
export function spendEntry(settlement: Settlement, cost: bigint): SpendEntry {
  return {
    reservationId: settlement.reservationId,
    tenantId: settlement.tenantId,
    keyId: settlement.keyId,
    pool: settlement.pool,
    promptTokens: settlement.usage.promptTokens,
    completionTokens: settlement.usage.completionTokens,
    costMicro: cost,
    free: settlement.free,
  };
}

export async function finalizeRequest(
  services: Services,
  input: Settlement,
  /** What to charge at most (the reservation caps it); default the usage at the pool's price. */
  actual: bigint = actualCost(input.pool, input.usage, services.config.prices),
): Promise<Settled> {
  const result = await services.store.finalize({
    tenantId: input.tenantId,
    reservationId: input.reservationId,
    // A free request reserved 0, so this charges min(actual, 0) = 0 (0 itself would mean a cancel,
    // which frees the idempotency key).
    actualCostMicro: actual,
    actualTokens: input.usage.promptTokens + input.usage.completionTokens,
    nowMs: services.clock.now(),
  });
  if (result.status === 'INVALID_INPUT') throw new Error(`finalize refused its input: ${result.field}`);
  // Only a charge can move a scope towards a threshold; the check runs off the request path.
  if (input.nearThreshold && result.status !== 'ALREADY_FINALIZED' && result.chargedMicro > 0n) {
    services.budgetThresholds.afterSettlement({
      tenantId: input.tenantId,
      keyId: input.keyId,
      reservationId: input.reservationId,
      ...input.caps,
    });
  }
  if (input.free) return { costMicro: result.chargedMicro, notionalCostMicro: actual };
  return { costMicro: result.chargedMicro };
}
