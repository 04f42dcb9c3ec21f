import type { VerifiedKey } from '../keys/verifier.js';
import type { SettledSpend } from '../ledger/outbox.js';
import { insertPoolDecision } from '../ledger/pool-decisions.js';
import type { SpendEntry } from '../ledger/spend.js';
import type { Services } from '../services.js';
import type { Admitted } from './admit.js';
import type { Usage } from './settle.js';

/*
 * The rows a request leaves in PostgreSQL, written by the stage that decides them: admission's
 * pool decision; settlement's spend row (appended to the tenant's outbox by finalize itself and
 * written by services.spend, which then acknowledges that entry; or, when the store failed,
 * written unsettled through it).
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
  services.waitUntil(insertPoolDecision(services.db, services.log, row));
}

/**
 * The settled spend row, for SpendRecorder.settled: the same figures finalize appended to the
 * tenant's outbox (`costMicro` is the charge asked for: a free request's notional cost; the store
 * charged `chargedMicro`).
 */
export function settledRow(
  key: VerifiedKey,
  admitted: Admitted,
  usage: Usage,
  costMicro: bigint,
  chargedMicro: bigint,
  settledAtMs: number,
): SettledSpend {
  // spendEntry's row with two fields set, not spread into a new one: objects built by spreading on
  // the request path were kept through young-generation collections (docs/performance.md, 2026-12-03).
  const row: SpendEntry & Partial<Pick<SettledSpend, 'chargedMicro' | 'settledAt'>> = spendEntry(
    key,
    admitted,
    usage,
    key.sandbox ? costMicro : chargedMicro,
  );
  row.chargedMicro = chargedMicro;
  row.settledAt = new Date(settledAtMs);
  return row as SettledSpend;
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
    userId: admitted.userId,
    channelId: admitted.channelId,
    pool: admitted.decision.pool,
    promptTokens: usage.promptTokens,
    completionTokens: usage.completionTokens,
    costMicro,
    free: key.sandbox,
  };
}
