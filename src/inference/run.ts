import type { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import type { Services } from '../services.js';
import { StoreUnavailable } from '../store/errors.js';
import { admitRequest } from './admit.js';
import { type Estimate, estimate } from './estimate.js';
import { actualCost, finalizeRequest, type Settlement, spendEntry, type Usage } from './finalize.js';
import { choosePool, type PoolDecision } from './pool.js';

/** What both routes (native SSE and OpenAI-compatible) ask for, once parsed. */
export interface InferenceInput {
  prompt: string;
  maxTokens?: number | undefined;
  pool?: string | undefined;
  userId?: string | undefined;
  channelId?: string | undefined;
}

export type Prepared =
  | {
      ok: true;
      decision: PoolDecision;
      estimate: Estimate;
      reservationId: string;
      headers: Record<string, string>;
    }
  | { ok: false; error: AppError; headers: Record<string, string> };

/** Stages 1–3 after authentication: estimate, choose the pool, admit (one engine call). */
export async function prepare(
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
): Promise<Prepared> {
  const decision = choosePool(key, input.pool);
  const cost = estimate(decision.pool, input.prompt, input.maxTokens);
  if (decision.reason !== 'as_requested' && decision.reason !== 'default') {
    services.log.info({ keyId: key.id, tenantId: key.tenantId, ...decision }, 'pool decision');
  }
  const admission = await admitRequest(services, key, {
    pool: decision.pool,
    estimate: cost,
    userId: input.userId,
    channelId: input.channelId,
  });
  if (!admission.ok) return admission;
  return {
    ok: true,
    decision,
    estimate: cost,
    reservationId: admission.reservationId,
    headers: { ...admission.headers, 'X-Pool-Used': decision.pool },
  };
}

export type Outcome =
  | { kind: 'done'; usage: Usage; costMicro: bigint; reservationId: string }
  | { kind: 'failed'; code: 'upstream_unavailable' | 'store_unavailable'; usage: Usage };

/**
 * Stages 4–6: stream from the upstream to `onToken`, count, stop at max_tokens (priced into the
 * reservation), then finalize — always, on success, error and abort alike — and record the spend.
 */
export async function relay(
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
  prepared: Extract<Prepared, { ok: true }>,
  sink: { onToken(content: string): Promise<void>; signal: AbortSignal },
): Promise<Outcome> {
  const upstreamAbort = new AbortController();
  const onClientAbort = () => upstreamAbort.abort();
  sink.signal.addEventListener('abort', onClientAbort, { once: true });
  let completionTokens = 0;
  let upstreamFailed = false;
  try {
    for await (const token of services.upstream.stream({
      pool: prepared.decision.pool,
      prompt: input.prompt,
      maxTokens: prepared.estimate.maxTokens,
      signal: upstreamAbort.signal,
    })) {
      if (sink.signal.aborted) break;
      completionTokens += 1;
      await sink.onToken(token.content);
      if (completionTokens >= prepared.estimate.maxTokens) break;
    }
  } catch (error) {
    upstreamFailed = true;
    services.log.warn({ err: error, reservationId: prepared.reservationId }, 'upstream failed mid-stream');
  } finally {
    upstreamAbort.abort();
    sink.signal.removeEventListener('abort', onClientAbort);
  }

  const usage = { promptTokens: prepared.estimate.promptTokens, completionTokens };
  const settlement: Settlement = {
    tenantId: key.tenantId,
    keyId: key.id,
    reservationId: prepared.reservationId,
    pool: prepared.decision.pool,
    usage,
  };
  let costMicro: bigint;
  try {
    costMicro = (await finalizeRequest(services, settlement)).costMicro;
  } catch (error) {
    // The charge must survive a store outage: an unsettled spend row, settled by the job later.
    await services.spend.unsettled(spendEntry(settlement, actualCost(settlement.pool, usage)));
    if (error instanceof StoreUnavailable) return { kind: 'failed', code: 'store_unavailable', usage };
    throw error;
  }
  services.spend.settled(spendEntry(settlement, costMicro));
  if (upstreamFailed) return { kind: 'failed', code: 'upstream_unavailable', usage };
  return { kind: 'done', usage, costMicro, reservationId: prepared.reservationId };
}
