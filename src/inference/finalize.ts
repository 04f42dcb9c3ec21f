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
export async function finalizeRequest(
  services: Services,
  input: { tenantId: string; reservationId: string; pool: Pool; usage: Usage },
): Promise<{ costMicro: bigint }> {
  const actual = costMicro(input.pool, input.usage.promptTokens + input.usage.completionTokens);
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
