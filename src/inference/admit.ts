import { admitWithPoolGate } from '../budget/admission.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import type { VerifiedKey } from '../keys/verifier.js';
import { withHydration } from '../ledger/hydrate.js';
import { rateLimitHeaders } from '../limits/headers.js';
import type { Services } from '../services.js';
import type { AdmitInput, AdmitResult } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import { tierLimits } from '../tenants/tiers.js';
import type { Estimate, Estimated, PoolDecision } from './estimate.js';
import { recordPoolDecision } from './record.js';
import type { InferenceInput } from './request.js';

// Sandbox limits hold per tenant across all its sandbox keys (DESIGN.md §6), revoked ones included:
// they share this one limit subject in place of a key id (never a key id: those are key_…), so
// the key_rpm and key_tpd counters, under the tenant's hash tag, are the tenant's sandbox counters.
export const SANDBOX_SUBJECT = 'sandbox';

export type Admission =
  | {
      ok: true;
      decision: PoolDecision;
      estimate: Estimate;
      reservationId: string;
      /** When the reservation was made: the relay's deadline counts from it. */
      admittedAtMs: number;
      /** Admission took a budget scope to 80 % or more: only then does settling check the thresholds. */
      nearThreshold: boolean;
      /** The request's `user` and `channel` (null: none named), for its spend row. */
      userId: string | null;
      channelId: string | null;
      headers: Record<string, string>;
    }
  | { ok: false; error: AppError; headers: Record<string, string> };

/** An admitted request: what the later stages work on. */
export type Admitted = Extract<Admission, { ok: true }>;

/**
 * Stage 2, one engine call: every limit dimension and budget scope, and the reservation (after the
 * tenant's mark in the tenant index, at most once a minute per process); then, for
 * a pool with a limit in POOL_LIMITS, its global gate (src/budget/admission.ts). An admitted
 * request whose pool was replaced leaves a pool-decision row.
 */
export async function admit(
  services: Services,
  key: VerifiedKey,
  request: InferenceInput,
  estimated: Extract<Estimated, { ok: true }>,
): Promise<Admission> {
  const { decision, estimate } = estimated;
  const tier = tierLimits(services.config.tiers, key.tenantTier);
  const nowMs = services.clock.now();
  const input: AdmitInput = {
    tenantId: key.tenantId,
    keyId: key.sandbox ? SANDBOX_SUBJECT : key.id,
    pool: decision.pool,
    reservationId: newId('res'),
    // Sandbox keys are free (DESIGN.md §6): a zero reservation is rate-limited like any
    // other but needs no credits and moves no budget scope; settling then charges min(actual, 0).
    costMicro: key.sandbox ? 0n : estimate.costMicro,
    // The upper bound, as reserved: key_tpd and the pool gate count what the upstream may report
    // (settling corrects key_tpd to the actual count).
    tokenEstimate: estimate.maxPromptTokens + estimate.maxTokens,
    nowMs,
    // RESERVATION_TTL_MS (5 min): only a fault lets the reaper release a reservation before it is settled.
    ttlMs: services.config.reservationTtlMs,
    limits: {
      tenantRpm: tier.tenantRpm,
      userRpm: tier.userRpm,
      channelRpm: tier.channelRpm,
      keyRpm: key.rpmLimit,
      // The bucket caps spikes: it refills its whole capacity every second (DESIGN.md §6); the
      // per-minute windows cap the sustained rate.
      burstCapacity: tier.burstCapacity,
      burstRefillPerMinute: tier.burstCapacity * 60,
      keyTpd: key.tpdLimit,
      tenantMonthlyCapMicro: key.tenantMonthlyCapMicro,
      keyMonthlyCapMicro: key.monthlyCapMicro,
    },
  };
  // Set, not spread in (docs/performance.md, 2026-12-03): absent when the request named none.
  if (request.userId !== undefined) input.userId = request.userId;
  if (request.channelId !== undefined) input.channelId = request.channelId;
  // A bucket holding one minute's tokens, refilled at that rate. A pool without a limit costs no
  // second store round trip.
  const poolLimit = services.config.poolLimits[decision.pool];
  // A request larger than the pool's whole minute could never pass: a 429 would invite retries.
  if (poolLimit !== undefined && input.tokenEstimate > poolLimit) {
    return {
      ok: false,
      headers: {},
      error: new AppError(
        'invalid_request',
        `The request may use up to ${input.tokenEstimate} tokens, more than pool ${decision.pool} serves in a minute (${poolLimit}); send a shorter prompt or a smaller max_tokens`,
        { pool: decision.pool, poolLimitTokensPerMinute: poolLimit, requestTokens: input.tokenEstimate },
      ),
    };
  }
  const gate = poolLimit === undefined ? undefined : { capacity: poolLimit, refillPerMinute: poolLimit };
  // The tenant enters the reaper's index before it can hold a reservation (once a minute per process).
  const marking = services.tenantActivity.mark(key.tenantId, nowMs);
  if (marking !== undefined) await marking;
  // An emptied store answers HYDRATE: the balance is rebuilt from the book, then admitted again.
  const result = await withHydration(services, key.tenantId, () =>
    admitWithPoolGate(services.store, input, gate, services.cancelsAfterTimeout),
  );
  const admission = toAdmission(result, nowMs, estimated, request);
  if (admission.ok && decision.reason !== 'as_requested' && decision.reason !== 'default') {
    recordPoolDecision(services, key, admission);
  }
  return admission;
}

function toAdmission(
  result: Exclude<AdmitResult, { status: 'HYDRATE' }>,
  nowMs: number,
  { decision, estimate }: Extract<Estimated, { ok: true }>,
  request: InferenceInput,
): Admission {
  switch (result.status) {
    case 'ADMITTED': {
      const headers: Record<string, string> = {};
      if (result.tightest !== null) {
        Object.assign(
          headers,
          rateLimitHeaders({
            limit: result.tightest.limit,
            remaining: result.tightest.remaining,
            resetInMs: result.tightest.resetAtMs - nowMs,
          }),
        );
      }
      headers['X-Pool-Used'] = decision.pool;
      // A reservation that takes no scope to 80 % cannot make its settlement cross a threshold.
      return {
        ok: true,
        decision,
        estimate,
        reservationId: result.reservationId,
        admittedAtMs: nowMs,
        nearThreshold: result.warning !== null,
        userId: request.userId ?? null,
        channelId: request.channelId ?? null,
        headers,
      };
    }
    case 'RATE_LIMITED': {
      const headers = rateLimitHeaders({
        limit: result.limit,
        remaining: 0,
        resetInMs: result.retryAfterMs,
        retryAfterMs: result.retryAfterMs,
      });
      return {
        ok: false,
        headers,
        error: new AppError('rate_limited', `Rate limit reached on ${result.dimension}`, {
          dimension: result.dimension,
          limit: result.limit,
          remaining: 0,
          retryAfterMs: result.retryAfterMs,
        }),
      };
    }
    case 'BUDGET_EXCEEDED':
      return {
        ok: false,
        headers: {},
        error: new AppError('budget_exceeded', `Not enough budget in ${result.scope}`, {
          scope: result.scope,
          remainingMicro: result.remainingMicro.toString(),
        }),
      };
    case 'ALREADY_RESERVED':
      return {
        ok: false,
        headers: {},
        error: new AppError('conflict', 'This request is already in progress'),
      };
    case 'CANCELLED':
      // Only a retried admit whose id this gateway already cancelled (after a timeout) lands here.
      throw new StoreUnavailable();
    case 'INVALID_INPUT':
      // Everything the caller sent was validated before: an invalid field here is our fault.
      throw new Error(`admit refused its input: ${result.field}`);
  }
}
