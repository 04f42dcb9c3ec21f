import type { SpendEntry } from '../ledger/spend.js';
import { costMicro, type Pool } from '../pricing/pricing.js';
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
}

/** What the usage costs at the pool's price (the reservation caps what is charged). */
export function actualCost(pool: Pool, usage: Usage): bigint {
  return costMicro(pool, usage.promptTokens + usage.completionTokens);
}

export function spendEntry(settlement: Settlement, cost: bigint): SpendEntry {
  return {
    reservationId: settlement.reservationId,
    tenantId: settlement.tenantId,
    keyId: settlement.keyId,
    pool: settlement.pool,
    promptTokens: settlement.usage.promptTokens,
    completionTokens: settlement.usage.completionTokens,
    costMicro: cost,
    free: false,
  };
}

export async function finalizeRequest(
  services: Services,
  input: Settlement,
  /** What to charge at most (the reservation caps it); default the usage at the pool's price. */
  actual: bigint = actualCost(input.pool, input.usage),
): Promise<{ costMicro: bigint }> {
  const result = await services.store.finalize({
    tenantId: input.tenantId,
    reservationId: input.reservationId,
    actualCostMicro: actual,
    actualTokens: input.usage.promptTokens + input.usage.completionTokens,
    nowMs: services.clock.now(),
  });
  if (result.status === 'INVALID_INPUT') throw new Error(`finalize refused its input: ${result.field}`);
  return { costMicro: result.chargedMicro };
}
