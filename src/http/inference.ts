import { Hono } from 'hono';
import * as v from 'valibot';
import { AppError } from '../errors.js';
import { InferenceRequest, promptText } from '../inference/request.js';
import { openUpstream, prepare, relay } from '../inference/run.js';
import type { Services } from '../services.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';
import { clientSignal, errorResponse } from './context.js';
import { readJson } from './json-body.js';
import { sseResponse } from './sse.js';

const tokenEvent = (content: string) => `{"type":"token","content":${JSON.stringify(content)}}`;

/**
 * POST /api/v1/inference — the native SSE route, in request order (DESIGN.md §1):
 * authenticate → estimate → admit (one engine call) → open the upstream (retries, breaker; a
 * failure here is a 503 and releases the reservation) → relay and count → finalize (one engine
 * call, whatever happened) → spend row → done event.
 */
export function inferenceRoute(services: Services): Hono<KeyEnv> {
  return new Hono<KeyEnv>().post('/api/v1/inference', requireApiKey(services), async (c) => {
    const key = c.get('apiKey');
    const parsed = v.safeParse(InferenceRequest, await readJson(c));
    if (!parsed.success) {
      return errorResponse(
        c,
        new AppError('invalid_request', `Invalid request: ${v.summarize(parsed.issues)}`),
      );
    }
    const body = parsed.output;
    const input = {
      prompt: promptText(body),
      messages: body.messages,
      maxTokens: body.max_tokens,
      pool: body.pool,
      userId: body.user,
      channelId: body.channel,
    };
    const prepared = await prepare(services, key, input);
    for (const [name, value] of Object.entries(prepared.headers)) c.header(name, value);
    if (!prepared.ok) return errorResponse(c, prepared.error);

    const clientGone = clientSignal(c);
    const opened = await openUpstream(services, key, input, prepared, clientGone.signal);
    if (!opened.ok) return errorResponse(c, opened.error);
    for (const [name, value] of Object.entries(opened.headers)) c.header(name, value);

    return sseResponse(
      c,
      async (stream) => {
        const outcome = await relay(services, key, prepared, opened.upstream, {
          signal: clientGone.signal,
          onTokens: (contents) => stream.write(...contents.map(tokenEvent)),
        });
        if (stream.aborted) return;
        if (outcome.kind === 'stalled') return 'abandon';
        if (outcome.kind === 'failed') {
          stream.write(JSON.stringify({ type: 'error', code: outcome.code }));
          return;
        }
        // Written after finalize, so a balance read after the stream is settled (unless pending).
        stream.write(
          JSON.stringify({
            type: 'done',
            usage: {
              prompt_tokens: outcome.usage.promptTokens,
              completion_tokens: outcome.usage.completionTokens,
              total_tokens: outcome.usage.promptTokens + outcome.usage.completionTokens,
            },
            // What was charged. A sandbox key's request is free (DESIGN.md §6): cost_micro is "0" and
            // notional_cost_micro is what it would have cost (the usage at the pool's price).
            cost_micro: outcome.costMicro.toString(),
            ...(outcome.notionalCostMicro === undefined
              ? {}
              : { notional_cost_micro: outcome.notionalCostMicro.toString() }),
            reservation_id: outcome.reservationId,
            // Every token was delivered but the store failed at finalize: the charge (cost_micro,
            // recorded in an unsettled spend row) is settled by a job once the store is back.
            // Absent means settled.
            ...(outcome.settlement === 'pending' ? { settlement: 'pending' } : {}),
          }),
        );
      },
      () => clientGone.abort(),
    );
  });
}
