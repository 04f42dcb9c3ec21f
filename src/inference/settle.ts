import type { VerifiedKey } from '../keys/verifier.js';
import { withHydration } from '../ledger/hydrate.js';
import { costAt } from '../pricing/pricing.js';
import type { Services } from '../services.js';
import type { FinalizeResult } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import type { Admitted } from './admit.js';
import { settledRow, spendEntry } from './record.js';
import type { Relay } from './relay.js';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** How a request ended, once settled: what the route tells the caller. */
export type Settlement =
  | {
      kind: 'done';
      usage: Usage;
      /** What was charged; 0 for a sandbox key's request (DESIGN.md §6). */
      costMicro: bigint;
      /** Sandbox keys only: the usage at the pool's price, charged 0. */
      notionalCostMicro?: bigint;
      reservationId: string;
      /**
       * Every token was delivered but the store failed: `costMicro` is what the settlement job will
       * charge (the unsettled spend row's amount, capped by the reservation).
       */
      pending: boolean;
    }
  | { kind: 'failed'; code: 'upstream_unavailable' | 'store_unavailable'; usage: Usage }
  /** The caller stopped reading past the deadline: settled; write nothing more to it. */
  | { kind: 'stalled'; usage: Usage };

// The most prompt tokens recorded from a report, unless the reservation allowed more: a 1 MiB
// body cannot hold more, and the store's counts stay in range. The report is the usage authority
// within bounds (never below what was relayed, never above max_tokens for the completion); the
// reservation caps what is charged.
const MAX_PROMPT_TOKENS = 1_000_000;

/**
 * Stage 5: settle the reservation with what was relayed — always, on success, error and abort
 * alike — charging min(actual, reserved) in one engine call, and record the spend row. Usage
 * authority: the upstream's report when the stream completed with one, else the relay's count.
 */
export async function settle(
  services: Services,
  key: VerifiedKey,
  admitted: Admitted,
  relay: Relay,
): Promise<Settlement> {
  const { estimate } = admitted;
  const report = relay.report;
  const completionTokens = Math.min(
    Math.max(report?.completionTokens ?? relay.delivered, relay.delivered),
    estimate.maxTokens,
  );
  const promptTokens = report?.promptTokens ?? estimate.promptTokens;
  // The reservation covers any byte-level tokenizer's count; a report beyond it is charged the
  // reservation and counted, judged on the report as given.
  const reserved = estimate.costMicro;
  const actual = costAt(estimate.microPer1kTokens, promptTokens + completionTokens);
  const charge = actual > reserved ? reserved : actual;
  const usage: Usage = {
    promptTokens: Math.min(promptTokens, Math.max(MAX_PROMPT_TOKENS, estimate.maxPromptTokens)),
    completionTokens,
  };
  if (actual > reserved) underReserved(services, key, admitted, promptTokens);
  let charged: Charged;
  try {
    charged = await settleReservation(services, key, admitted, usage, charge);
  } catch (error) {
    if (!(error instanceof StoreUnavailable)) throw error;
    // Every token went out: the answer is complete and its charge is recorded (the unsettled spend
    // row), so the caller gets its done event rather than an error it would retry and pay twice.
    if (relay.end === 'complete') {
      return {
        kind: 'done',
        usage,
        // What the settlement job will charge: the capped charge; nothing for a free key.
        ...(key.sandbox ? { costMicro: 0n, notionalCostMicro: charge } : { costMicro: charge }),
        reservationId: admitted.reservationId,
        pending: true,
      };
    }
    return { kind: 'failed', code: 'store_unavailable', usage };
  }
  if (relay.end === 'stalled') return { kind: 'stalled', usage };
  if (relay.end === 'upstream_failed') return { kind: 'failed', code: 'upstream_unavailable', usage };
  return { kind: 'done', usage, ...charged, reservationId: admitted.reservationId, pending: false };
}

/**
 * The upstream never answered: the whole reservation is released, nothing charged (a spend row of
 * nothing). Throws if the store fails; the charge of 0 then waits in an unsettled spend row.
 */
export function release(services: Services, key: VerifiedKey, admitted: Admitted): Promise<Charged> {
  return settleReservation(services, key, admitted, { promptTokens: 0, completionTokens: 0 }, 0n);
}

/** What a settlement charged and, for a free one, what it would have cost. */
interface Charged {
  costMicro: bigint;
  /** Free (sandbox) requests only: the usage at the pool's price, charged 0. */
  notionalCostMicro?: bigint;
}

/**
 * One engine call: the store's finalize, which also appends the spend row to the tenant's outbox;
 * the row is handed to the spend recorder, which writes it and acknowledges that entry. In
 * recovery mode: a reservation the store lost with its data (Redis emptied while the request ran)
 * is charged all the same (RECOVERED, after the balance is rebuilt from the book). If the store
 * fails, the charge survives as an unsettled spend row that the settlement job settles later; the
 * error is rethrown.
 */
async function settleReservation(
  services: Services,
  key: VerifiedKey,
  admitted: Admitted,
  usage: Usage,
  /** What to charge, at most the reservation; 0 releases the whole reservation. */
  charge: bigint,
): Promise<Charged> {
  let charged: Charged;
  const nowMs = services.clock.now();
  let result: Exclude<FinalizeResult, { status: 'HYDRATE' }>;
  // This process's written spend rows of the tenant: their outbox entries leave in the same call.
  const ack = services.spend.takeAcks(key.tenantId);
  try {
    result = await withHydration(services, key.tenantId, () =>
      services.store.finalize({
        tenantId: key.tenantId,
        reservationId: admitted.reservationId,
        // A free request reserved 0, so this charges min(charge, 0) = 0 (0 itself would mean a
        // cancel, which frees the idempotency key).
        actualCostMicro: charge,
        nowMs,
        // The spend row goes to the tenant's outbox in the same call.
        spend: {
          keyId: key.id,
          promptTokens: usage.promptTokens,
          completionTokens: usage.completionTokens,
          free: key.sandbox,
        },
        recover: { pool: admitted.decision.pool },
        ...(ack.length === 0 ? {} : { ack }),
      }),
    );
    if (result.status === 'INVALID_INPUT') throw new Error(`settlement refused its input: ${result.field}`);
    // Only a charge can move a scope towards a threshold, and only a reservation admitted at 80 %
    // or more of a scope can cross one (a crossing made meanwhile by others is reported by the
    // next settlement in that scope); the check runs off the request path.
    if (admitted.nearThreshold && result.status !== 'ALREADY_FINALIZED' && result.chargedMicro > 0n) {
      services.budgetThresholds.afterSettlement({
        tenantId: key.tenantId,
        keyId: key.id,
        reservationId: admitted.reservationId,
        tenantMonthlyCapMicro: key.tenantMonthlyCapMicro,
        keyMonthlyCapMicro: key.monthlyCapMicro,
      });
    }
    charged = key.sandbox
      ? { costMicro: result.chargedMicro, notionalCostMicro: charge }
      : { costMicro: result.chargedMicro };
  } catch (error) {
    services.spend.putBackAcks(key.tenantId, ack);
    // The charge must survive a store outage: an unsettled spend row, settled by the job later.
    await services.spend.unsettled(spendEntry(key, admitted, usage, charge));
    throw error;
  }
  // The row is in the tenant's outbox already; this process writes it and acknowledges the entry.
  if (result.status !== 'ALREADY_FINALIZED') {
    services.spend.settled(
      settledRow(key, admitted, usage, charge, result.chargedMicro, nowMs),
      result.outboxEntryId,
    );
  }
  return charged;
}

/** An upstream reported more than the reservation covers: zero in normal operation (DESIGN.md §1). */
function underReserved(
  services: Services,
  key: VerifiedKey,
  admitted: Admitted,
  reportedPromptTokens: number,
): void {
  services.metrics.underReservedEvents.inc();
  services.log.warn(
    {
      event: 'UNDER_RESERVED',
      tenantId: key.tenantId,
      reservationId: admitted.reservationId,
      pool: admitted.decision.pool,
      promptTokens: reportedPromptTokens,
      reservedPromptTokens: admitted.estimate.maxPromptTokens,
      reservedMicro: admitted.estimate.costMicro.toString(),
    },
    'UNDER_RESERVED',
  );
}
