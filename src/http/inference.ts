import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import * as v from 'valibot';
import { AppError } from '../errors.js';
import { admitRequest } from '../inference/admit.js';
import { estimate } from '../inference/estimate.js';
import { actualCost, finalizeRequest, spendEntry } from '../inference/finalize.js';
import { choosePool } from '../inference/pool.js';
import { InferenceRequest, promptText } from '../inference/request.js';
import type { Services } from '../services.js';
import { StoreUnavailable } from '../store/errors.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';
import { errorResponse } from './context.js';

/**
 * POST /api/v1/inference — the native SSE route, in request order (DESIGN.md §1):
 * authenticate → estimate → admit (one engine call) → upstream stream → relay and count →
 * finalize (one engine call, in `finally`, whatever happened) → done event.
 */
export function inferenceRoute(services: Services): Hono<KeyEnv> {
  return new Hono<KeyEnv>().post('/api/v1/inference', requireApiKey(services), async (c) => {
    const key = c.get('apiKey');
    const parsed = v.safeParse(InferenceRequest, await c.req.json().catch(() => undefined));
    if (!parsed.success) {
      return errorResponse(
        c,
        new AppError('invalid_request', `Invalid request: ${v.summarize(parsed.issues)}`),
      );
    }
    const body = parsed.output;
    const prompt = promptText(body);
    const decision = choosePool(key, body.pool);
    const cost = estimate(decision.pool, prompt, body.max_tokens);
    if (decision.reason !== 'as_requested' && decision.reason !== 'default') {
      c.get('log').info({ keyId: key.id, ...decision }, 'pool decision');
    }

    const admission = await admitRequest(services, key, {
      pool: decision.pool,
      estimate: cost,
      userId: body.user,
      channelId: body.channel,
    });
    for (const [name, value] of Object.entries(admission.headers)) c.header(name, value);
    if (!admission.ok) return errorResponse(c, admission.error);

    const { reservationId } = admission;
    c.header('X-Pool-Used', decision.pool);
    const upstreamAbort = new AbortController();
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => upstreamAbort.abort());
      let completionTokens = 0;
      let failed = false;
      try {
        for await (const token of services.upstream.stream({
          pool: decision.pool,
          prompt,
          maxTokens: cost.maxTokens,
          signal: upstreamAbort.signal,
        })) {
          if (stream.aborted) break;
          completionTokens += 1;
          await stream.writeSSE({ data: JSON.stringify({ type: 'token', content: token.content }) });
          // Never past the reservation: max_tokens was priced into it.
          if (completionTokens >= cost.maxTokens) break;
        }
      } catch (error) {
        failed = true;
        c.get('log').warn({ err: error, reservationId }, 'upstream failed mid-stream');
      } finally {
        upstreamAbort.abort();
      }
      // Settled before the done event, so a balance read after the stream is final.
      const usage = { promptTokens: cost.promptTokens, completionTokens };
      const settlement = { tenantId: key.tenantId, keyId: key.id, reservationId, pool: decision.pool, usage };
      let costMicro: bigint;
      try {
        costMicro = (await finalizeRequest(services, settlement)).costMicro;
      } catch (error) {
        // The charge must survive a store outage: an unsettled spend row, settled by the job later.
        await services.spend.unsettled(spendEntry(settlement, actualCost(decision.pool, usage)));
        if (!stream.aborted)
          await stream.writeSSE({ data: JSON.stringify({ type: 'error', code: 'store_unavailable' }) });
        if (error instanceof StoreUnavailable) return;
        throw error;
      }
      services.spend.settled(spendEntry(settlement, costMicro));
      if (stream.aborted) return;
      if (failed) {
        await stream.writeSSE({ data: JSON.stringify({ type: 'error', code: 'upstream_unavailable' }) });
        return;
      }
      await stream.writeSSE({
        data: JSON.stringify({
          type: 'done',
          usage: {
            prompt_tokens: usage.promptTokens,
            completion_tokens: usage.completionTokens,
            total_tokens: usage.promptTokens + usage.completionTokens,
          },
          cost_micro: costMicro.toString(),
          reservation_id: reservationId,
        }),
      });
    });
  });
}
