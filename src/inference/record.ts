import type { VerifiedKey } from '../keys/verifier.js';
import { insertPoolDecision } from '../ledger/pool-decisions.js';
import type { SpendEntry } from '../ledger/spend.js';
import type { Services } from '../services.js';
import type { Admitted } from './admit.js';
import type { Usage } from './settle.js';

/*
 * The rows a request leaves in PostgreSQL, written by the stage that decides them: admission's
 * pool decision; settlement's spend row (appended to the tenant's outbox by finalize itself and
 * drained into PostgreSQL, or, when the store failed, written unsettled through services.spend).
 */

/** An admitted request whose pool was replaced (DESIGN.md §4): logged, and a row off the request path. */
export function recordPoolDecision(services: Services, key: VerifiedKey, admitted: Admitted): void {
  const row = {
    reservationId: admitted.reservationId,
    tenantId: key.tenantId,
    keyId: key.id,
    requested: admitted.decision.requested,
    actual: admitted.decision.pool,
    reason: admitted.decision.reason,
    costMicro: admitted.estimate.costMicro,
    createdAt: new Date(services.clock.now()),
  };
  services.log.info({ ...row, costMicro: row.costMicro.toString(), createdAt: undefined }, 'pool decision');
  insertPoolDecision(services.db, services.log, row);
}

/**
 * The unsettled spend row, for SpendRecorder.unsettled. `costMicro` is what is to be charged at
 * most; for a free (sandbox) request, the notional cost — the row is marked `free` and the
 * settlement job (SpendRecorder.settleUnsettled) charges such a row nothing.
 */
export function spendEntry(
  key: VerifiedKey,
  admitted: Admitted,
  usage: Usage,
  costMicro: bigint,
): SpendEntry {
  return {
    reservationId: admitted.reservationId,
    tenantId: key.tenantId,
    keyId: key.id,
    pool: admitted.decision.pool,
    promptTokens: usage.promptTokens,
    completionTokens: usage.completionTokens,
    costMicro,
    free: key.sandbox,
  };
}
