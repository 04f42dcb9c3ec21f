import type { AdmitInput, AdmitResult } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import type { Store } from '../store/typed-store.js';
import type { CancelAfterTimeout } from './cancel-after-timeout.js';

/** A global token bucket protecting one pool's upstream across all tenants (a pool named in POOL_LIMITS). */
export interface PoolGateConfig {
  capacity: number;
  refillPerMinute: number;
}

/**
 * Admission: `admit` (every tenant dimension and budget scope, one atomic call), then — when the
 * pool has a gate — `pool_gate`. Its key cannot share the tenant's hash tag, so it is a second call;
 * when it denies, the fresh reservation is cancelled at once and the caller sees RATE_LIMITED on
 * dimension `pool`. The budget is then untouched; the request still counts in the tenant's rate
 * windows (it was made), which is the one thing the two-step order cannot undo. The cancel also
 * frees the idempotency key, so the same request may be retried once the pool has room.
 * An admit the store did not answer may still run later: its reservation id is cancelled in the
 * background (`cancels`) so the late admit cannot lock the tenant's credits.
 */
export async function admitWithPoolGate(
  store: Store,
  input: AdmitInput,
  poolGate: PoolGateConfig | undefined,
  cancels?: CancelAfterTimeout,
): Promise<AdmitResult> {
  let admitted: AdmitResult;
  try {
    admitted = await store.admit(input);
  } catch (error) {
    if (error instanceof StoreUnavailable)
      cancels?.schedule(input.tenantId, input.reservationId, input.nowMs);
    throw error;
  }
  if (admitted.status !== 'ADMITTED' || poolGate === undefined) return admitted;

  let gate: Awaited<ReturnType<Store['poolGate']>>;
  try {
    gate = await store.poolGate({
      pool: input.pool,
      tokens: Math.max(1, input.tokenEstimate),
      capacity: poolGate.capacity,
      refillPerMinute: poolGate.refillPerMinute,
      nowMs: input.nowMs,
    });
  } catch (error) {
    // The gate could not answer: release the budget now rather than after the reservation TTL.
    await cancel(store, input, admitted.reservationId);
    throw error;
  }
  if (gate.status === 'ALLOWED') return admitted;
  await cancel(store, input, admitted.reservationId);
  // A gate refusing its own configuration is our fault, not the caller's.
  if (gate.status === 'INVALID_INPUT')
    throw new Error(`pool gate of ${input.pool} is misconfigured: ${gate.field}`);
  return gate;
}

/** Best effort: if the store is down too, the reaper releases the reservation later. */
async function cancel(store: Store, input: AdmitInput, reservationId: string): Promise<void> {
  await store.cancel({ tenantId: input.tenantId, reservationId, nowMs: input.nowMs }).catch(() => undefined);
}
