import { poolDecisions } from '../../db/schema/index.js';
import type { CancelSignal } from '../cancellation.js';
import { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import { POOLS } from '../pricing/pricing.js';
import type { Services } from '../services.js';
import { StoreUnavailable } from '../store/errors.js';
import { type UpstreamResponse, UpstreamUnavailable } from '../upstream/port.js';
import { admitRequest } from './admit.js';
import { type Estimate, estimate } from './estimate.js';
import {
  actualCost,
  finalizeRequest,
  type Settled,
  type Settlement,
  settlementTerms,
  spendEntry,
  type Usage,
} from './finalize.js';
import { choosePool, type PoolDecision } from './pool.js';

/** What both routes (native SSE and OpenAI-compatible) ask for, once parsed. */
export interface InferenceInput {
  prompt: string;
  /** The chat as sent, for upstreams that take messages (OpenAI-compatible). */
  messages?: readonly { role: string; content: string }[] | undefined;
  maxTokens?: number | undefined;
  /** A pool name or a configured alias (MODEL_ALIASES). */
  pool?: string | undefined;
  userId?: string | undefined;
  channelId?: string | undefined;
  /** The caller reads a stream (the native route always does); default true. */
  stream?: boolean | undefined;
}

export type Prepared =
  | {
      ok: true;
      decision: PoolDecision;
      estimate: Estimate;
      reservationId: string;
      /** Admission took a budget scope to 80 % or more (see Settlement.nearThreshold). */
      nearThreshold: boolean;
      headers: Record<string, string>;
    }
  | { ok: false; error: AppError; headers: Record<string, string> };

/** Stages 1–3 after authentication: estimate, choose the pool, admit (one engine call). */
export async function prepare(
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
): Promise<Prepared> {
  const requested =
    input.pool === undefined ? undefined : (services.config.modelAliases[input.pool] ?? input.pool);
  const decision = choosePool(services.config.tiers, key, requested);
  // Refused before admission: nothing is reserved and no rate limit counts it.
  if (decision === undefined) {
    return {
      ok: false,
      error: new AppError(
        'unknown_pool',
        `Unknown pool ${JSON.stringify(input.pool)}; pools: ${POOLS.join(', ')}`,
      ),
      headers: {},
    };
  }
  const cost = estimate(
    decision.pool,
    input.prompt,
    input.maxTokens,
    services.config.prices,
    input.messages?.length,
  );
  const admission = await admitRequest(services, key, {
    pool: decision.pool,
    estimate: cost,
    userId: input.userId,
    channelId: input.channelId,
  });
  if (!admission.ok) return admission;
  if (decision.reason !== 'as_requested' && decision.reason !== 'default') {
    recordDecision(
      services,
      key,
      { ...decision, requested: input.pool ?? decision.requested },
      admission.reservationId,
      cost,
    );
  }
  return {
    ok: true,
    decision,
    estimate: cost,
    reservationId: admission.reservationId,
    nearThreshold: admission.nearThreshold,
    headers: { ...admission.headers, 'X-Pool-Used': decision.pool },
  };
}

/** A pool-enforcement decision row (DESIGN.md §4), written off the request path. */
function recordDecision(
  services: Services,
  key: VerifiedKey,
  decision: PoolDecision,
  reservationId: string,
  cost: Estimate,
): void {
  const row = {
    reservationId,
    tenantId: key.tenantId,
    keyId: key.id,
    requested: decision.requested,
    actual: decision.pool,
    reason: decision.reason,
    costMicro: cost.costMicro,
    createdAt: new Date(services.clock.now()),
  };
  services.log.info({ ...row, costMicro: row.costMicro.toString(), createdAt: undefined }, 'pool decision');
  void services.db
    .insert(poolDecisions)
    .values(row)
    .onConflictDoNothing()
    .catch((error: unknown) =>
      services.log.warn({ err: error, reservationId }, 'pool decision not recorded'),
    );
}

export type Opened =
  | { ok: true; upstream: UpstreamResponse; headers: Record<string, string> }
  | { ok: false; error: AppError };

/**
 * Stage 4: the upstream call, up to its first byte (with its retries and breaker). Nothing has been
 * sent to the caller yet, so a failure here is a plain 503 — and the reservation is released.
 */
export async function openUpstream(
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
  prepared: Extract<Prepared, { ok: true }>,
  signal: CancelSignal,
): Promise<Opened> {
  try {
    const upstream = await services.upstream.open({
      pool: prepared.decision.pool,
      prompt: input.prompt,
      messages: input.messages,
      stream: input.stream ?? true,
      maxTokens: prepared.estimate.maxTokens,
      caller: {
        tenantId: key.tenantId,
        tier: key.tenantTier,
        keyId: key.id,
        subject: input.userId ?? key.id,
        reservationId: prepared.reservationId,
      },
      signal,
    });
    const headers: Record<string, string> = {};
    if (upstream.poolUsed !== undefined) headers['X-Pool-Used'] = upstream.poolUsed;
    if (upstream.personalityId !== undefined) headers['X-Personality-Id'] = upstream.personalityId;
    return { ok: true, upstream, headers };
  } catch (error) {
    await settle(services, key, prepared, { promptTokens: 0, completionTokens: 0 }, 0n).catch((settleError) =>
      services.log.warn(
        { err: settleError, reservationId: prepared.reservationId },
        'release after upstream failure',
      ),
    );
    if (error instanceof UpstreamUnavailable) return { ok: false, error };
    if (signal.aborted) return { ok: false, error: new UpstreamUnavailable('The client went away') };
    // A fault of ours on the way (no signing key, a bad URL): logged, and still a 503 to the caller.
    services.log.error({ err: error, reservationId: prepared.reservationId }, 'upstream call failed');
    return { ok: false, error: new UpstreamUnavailable('The upstream call failed') };
  }
}

// An upstream that honours max_tokens sends nothing after the cap but its end (usage, [DONE]).
const DRAIN_LIMIT_TOKENS = 16;

export type Outcome =
  | {
      kind: 'done';
      usage: Usage;
      costMicro: bigint;
      notionalCostMicro?: bigint;
      reservationId: string;
      /**
       * `pending`: every token was delivered but the store failed at finalize; `costMicro` is what
       * the settlement job will charge (the unsettled spend row's amount, capped by the reservation).
       */
      settlement: 'settled' | 'pending';
    }
  | { kind: 'failed'; code: 'upstream_unavailable' | 'store_unavailable'; usage: Usage }
  /** The client stopped reading past the deadline: settled; write nothing more to it. */
  | { kind: 'stalled'; usage: Usage };

// How long after the upstream's own total timeout a relay may still wait on a client that does
// not read: the reservation must be settled well before its TTL (5 min), or the reaper frees money
// that is still being spent.
const RELAY_GRACE_MS = 30_000;
// The most prompt tokens recorded from a report, unless the reservation allowed more: a 1 MiB
// body cannot hold more, and the store's counts stay in range. The report is the usage authority
// within bounds (never below what was relayed, never above max_tokens for the completion); the
// reservation caps what is charged.
const MAX_PROMPT_TOKENS = 1_000_000;

/**
 * Stages 5–6: relay the upstream's tokens to `onTokens`, count, stop at max_tokens (priced into the
 * reservation), then finalize — always, on success, error and abort alike — and record the spend.
 * Usage authority: the upstream's report when the stream completed with one, else our count.
 */
export async function relay(
  services: Services,
  key: VerifiedKey,
  prepared: Extract<Prepared, { ok: true }>,
  upstream: UpstreamResponse,
  /**
   * `onTokens` gets each batch as it arrived, cut at max_tokens; it returns a promise only when the
   * client is not keeping up (the write blocks), else nothing — no allocation per token.
   */
  sink: { onTokens(contents: readonly string[]): Promise<void> | undefined; signal: CancelSignal },
): Promise<Outcome> {
  let delivered = 0;
  let beyondCap = 0;
  let upstreamFailed = false;
  let reported = false;
  let stalled = false;
  // Past the deadline the pending write is abandoned. Not a Promise.race against one long-lived
  // promise: every race would leave a reaction on it, kept until the deadline (a leak per write).
  let giveUp: (() => void) | undefined;
  const deadlineTimer = setTimeout(() => {
    stalled = true;
    giveUp?.();
  }, services.config.upstreamTimeoutMs + RELAY_GRACE_MS);
  deadlineTimer.unref?.();
  const cap = prepared.estimate.maxTokens;
  try {
    for await (const batch of upstream.tokens) {
      if (sink.signal.aborted) break;
      // At the cap nothing more is relayed, but the stream is read to its end (its usage report,
      // and a connection the upstream can keep alive); an upstream that ignores max_tokens is cut.
      const room = cap - delivered;
      const relayed = batch.length <= room ? batch : batch.slice(0, Math.max(0, room));
      beyondCap += batch.length - relayed.length;
      if (relayed.length > 0) {
        delivered += relayed.length;
        const write = sink.onTokens(relayed);
        if (write !== undefined) {
          // A client that stops reading blocks the write: past the deadline, give up on it.
          await new Promise<void>((resolve, reject) => {
            giveUp = resolve;
            write.then(resolve, reject);
          });
          giveUp = undefined;
          if (stalled) break;
        }
      }
      // After what fitted under the cap was relayed: one burst can carry both.
      if (beyondCap > DRAIN_LIMIT_TOKENS) break;
    }
    reported = !sink.signal.aborted && !stalled && beyondCap <= DRAIN_LIMIT_TOKENS;
  } catch (error) {
    if (!sink.signal.aborted) {
      upstreamFailed = true;
      services.log.warn({ err: error, reservationId: prepared.reservationId }, 'upstream failed mid-stream');
    }
  } finally {
    clearTimeout(deadlineTimer);
  }
  if (stalled)
    services.log.warn({ reservationId: prepared.reservationId }, 'client stopped reading: settled');

  const report = reported ? upstream.usage() : undefined;
  const completionTokens = Math.min(
    Math.max(report?.completionTokens ?? delivered, delivered),
    prepared.estimate.maxTokens,
  );
  const promptTokens = report?.promptTokens ?? prepared.estimate.promptTokens;
  // The reservation covers any byte-level tokenizer's count; a report beyond it is charged the
  // reservation and counted, judged on the report as given.
  const reserved = prepared.estimate.costMicro;
  const actual = actualCost(
    prepared.decision.pool,
    { promptTokens, completionTokens },
    services.config.prices,
  );
  const charge = actual > reserved ? reserved : actual;
  const usage: Usage = {
    promptTokens: Math.min(promptTokens, Math.max(MAX_PROMPT_TOKENS, prepared.estimate.maxPromptTokens)),
    completionTokens,
  };
  if (actual > reserved) underReserved(services, key, prepared, promptTokens);
  let settled: Settled;
  try {
    settled = await settle(services, key, prepared, usage, charge);
  } catch (error) {
    if (!(error instanceof StoreUnavailable)) throw error;
    // Every token went out: the answer is complete and its charge is recorded (the unsettled spend
    // row), so the caller gets its done event rather than an error it would retry and pay twice.
    if (!stalled && !upstreamFailed && !sink.signal.aborted) {
      return {
        kind: 'done',
        usage,
        // What the settlement job will charge: the capped charge; nothing for a free key.
        ...(key.sandbox ? { costMicro: 0n, notionalCostMicro: charge } : { costMicro: charge }),
        reservationId: prepared.reservationId,
        settlement: 'pending',
      };
    }
    return { kind: 'failed', code: 'store_unavailable', usage };
  }
  if (stalled) return { kind: 'stalled', usage };
  if (upstreamFailed) return { kind: 'failed', code: 'upstream_unavailable', usage };
  return { kind: 'done', usage, ...settled, reservationId: prepared.reservationId, settlement: 'settled' };
}

/** An upstream reported more than the reservation covers: zero in normal operation (DESIGN.md §1). */
function underReserved(
  services: Services,
  key: VerifiedKey,
  prepared: Extract<Prepared, { ok: true }>,
  reportedPromptTokens: number,
): void {
  services.metrics.underReservedEvents.inc();
  services.log.warn(
    {
      event: 'UNDER_RESERVED',
      tenantId: key.tenantId,
      reservationId: prepared.reservationId,
      pool: prepared.decision.pool,
      promptTokens: reportedPromptTokens,
      reservedPromptTokens: prepared.estimate.maxPromptTokens,
      reservedMicro: prepared.estimate.costMicro.toString(),
    },
    'UNDER_RESERVED',
  );
}

/**
 * Finalize (one engine call) and the spend row. If the store fails, the charge survives as an
 * unsettled spend row that the settlement job finalizes later; the error is rethrown.
 */
async function settle(
  services: Services,
  key: VerifiedKey,
  prepared: Extract<Prepared, { ok: true }>,
  usage: Usage,
  /** What to charge, at most the reservation; 0 releases the whole reservation (an upstream that never answered). */
  cost: bigint,
): Promise<Settled> {
  const settlement: Settlement = {
    tenantId: key.tenantId,
    keyId: key.id,
    reservationId: prepared.reservationId,
    pool: prepared.decision.pool,
    usage,
    ...settlementTerms(key),
    nearThreshold: prepared.nearThreshold,
  };
  let settled: Settled;
  try {
    settled = await finalizeRequest(services, settlement, cost);
  } catch (error) {
    // The charge must survive a store outage: an unsettled spend row, settled by the job later.
    await services.spend.unsettled(spendEntry(settlement, cost));
    throw error;
  }
  services.spend.settled(spendEntry(settlement, settled.notionalCostMicro ?? settled.costMicro));
  return settled;
}
