import type { Context } from 'hono';
import { AppError } from '../errors.js';
import { type Admitted, admit } from '../inference/admit.js';
import { type Estimated, estimateRequest } from '../inference/estimate.js';
import { openUpstream } from '../inference/open-upstream.js';
import { relay } from '../inference/relay.js';
import type { InferenceInput } from '../inference/request.js';
import { type Settlement, settle, type Usage } from '../inference/settle.js';
import type { VerifiedKey } from '../keys/verifier.js';
import type { Services } from '../services.js';
import type { KeyEnv } from './api-key-auth.js';
import { clientSignal, nodeOutgoing } from './context.js';
import { writeJson } from './node-reply.js';
import { type SseStream, sseResponse } from './sse.js';

/** What a route decides about its answers; `R` is its parsed request body. Made once per route. */
export interface AnswerShape<R> {
  /** The route's error body, for a request refused or failed before its first byte. */
  error(c: Context<KeyEnv>, error: AppError, request: R): Response;
  /** The writer of one answer, once the upstream answered. */
  answer(admitted: Admitted, request: R): Answer;
}

/** How one answer is written: as a stream, one event per token and its end once settled; or whole. */
export interface Answer {
  /** One token's event (JSON, no line breaks); called with the Answer as `this`. */
  token(content: string): string;
  /** The closing events: the answer's end and usage, or the failure. */
  end(stream: SseStream, settlement: Exclude<Settlement, { kind: 'stalled' }>): void;
  /** The JSON body of the answer in one piece, for a caller that asked for no stream (`stream: false`). */
  whole?(content: string, settlement: Exclude<Settlement, { kind: 'failed' }>): unknown;
}

/**
 * An inference request through the pipeline, in request order (DESIGN.md §1), after
 * authentication and parsing: estimate → admit (one engine call) → open the upstream (retries,
 * breaker; a failure here is the route's error and releases the reservation) → relay and count →
 * settle (one engine call, whatever happened; the spend row) → the closing events, after
 * settlement, so a balance read after the stream is settled. Both inference routes answer through
 * here, each with its own `AnswerShape`.
 */
export async function runInference<R>(
  c: Context<KeyEnv>,
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
  shape: AnswerShape<R>,
  request: R,
): Promise<Response> {
  // Both routes' feature switch, before anything is reserved or counted.
  const disabled = services.flags.refusal('inference', key.tenantId);
  if (disabled !== undefined) return shape.error(c, disabled, request);
  const { tiers, modelAliases } = services.config;
  const prices = services.prices.pricesFor(key.tenantId);
  const estimated = estimateRequest({ tiers, modelAliases, prices }, key, input);
  if (!estimated.ok) return shape.error(c, estimated.error, request);
  // From the reservation on, everything runs to its settlement even when the caller hangs up:
  // Workers would otherwise drop the request's work with the connection.
  const answered = admitAndAnswer(c, services, key, input, shape, request, estimated);
  services.waitUntil(answered);
  return answered;
}

/** The pipeline from admission on, for `runInference`, which has estimated the reservation. */
async function admitAndAnswer<R>(
  c: Context<KeyEnv>,
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
  shape: AnswerShape<R>,
  request: R,
  estimated: Extract<Estimated, { ok: true }>,
): Promise<Response> {
  const admission = await admit(services, key, input, estimated);
  // The answer's headers (rate limits, pool used), on an error too.
  let headers = admission.headers;
  const refuse = (error: AppError) => {
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
    return shape.error(c, error, request);
  };
  if (!admission.ok) return refuse(admission.error);

  const clientGone = clientSignal(c);
  const call = await openUpstream(services, key, input, admission, clientGone.signal);
  if (!call.ok) return refuse(call.error);
  // Merged by assignment, not by spreading (docs/performance.md, 2026-12-03).
  headers = Object.assign({}, headers, call.headers);

  const answer = shape.answer(admission, request);
  if (input.stream === false && answer.whole !== undefined) {
    let content = '';
    const relayed = await relay(services, admission, call.upstream, {
      signal: clientGone.signal,
      onTokens: (contents) => {
        for (const token of contents) content += token;
        return undefined;
      },
    });
    const settlement = await settle(services, key, admission, relayed);
    if (settlement.kind === 'failed') {
      return refuse(new AppError(settlement.code, 'The request could not be completed'));
    }
    const body = answer.whole(content, settlement);
    const outgoing = nodeOutgoing(c);
    if (outgoing !== undefined) return writeJson(c, outgoing, 200, body, headers);
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
    return c.json(body);
  }

  const run = async (stream: SseStream): Promise<'abandon' | undefined> => {
    const relayed = await relay(services, admission, call.upstream, {
      signal: clientGone.signal,
      onTokens: (contents) => stream.write(...contents.map(answer.token, answer)),
    });
    const settlement = await settle(services, key, admission, relayed);
    if (stream.aborted) return undefined;
    if (settlement.kind === 'stalled') return 'abandon';
    answer.end(stream, settlement);
    return undefined;
  };
  return sseResponse(
    c,
    (stream) => {
      // The stream outlives the handler: its settlement must be waited for as well.
      const running = run(stream);
      services.waitUntil(running);
      return running;
    },
    () => clientGone.abort(),
    headers,
  );
}

/** Usage as both routes write it (OpenAI's field names). */
export function usageBody(usage: Usage) {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
  };
}
