import { Hono } from 'hono';
import * as v from 'valibot';
import { AppError } from '../errors.js';
import { MAX_COMPLETION_TOKENS, MAX_MESSAGES } from '../inference/estimate.js';
import { chatText } from '../inference/request.js';
import type { Services } from '../services.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';
import { errorResponse } from './context.js';
import { readJson } from './json-body.js';
import { type Answer, type AnswerShape, runInference, usageBody } from './run-inference.js';

const Id = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1–64 characters of [A-Za-z0-9_-]'));

/** The native request body (DESIGN.md §4). Exactly one of `prompt` and `messages`. */
const InferenceRequest = v.pipe(
  v.object({
    prompt: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(200_000))),
    messages: v.optional(
      v.pipe(
        v.array(
          v.object({
            role: v.picklist(['system', 'user', 'assistant']),
            content: v.pipe(v.string(), v.maxLength(200_000)),
          }),
        ),
        v.minLength(1),
        v.maxLength(MAX_MESSAGES),
      ),
    ),
    max_tokens: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_COMPLETION_TOKENS))),
    pool: v.optional(v.pipe(v.string(), v.maxLength(32))),
    user: v.optional(Id),
    channel: v.optional(Id),
    stream: v.optional(v.literal(true)),
  }),
  v.check(
    (body) => (body.prompt === undefined) !== (body.messages === undefined),
    'give exactly one of prompt and messages',
  ),
);

/** `{"type":"token"}` events, then one `{"type":"done"}` (or `{"type":"error"}`) event. */
const NATIVE_ANSWER: Answer = {
  token: (content) => `{"type":"token","content":${JSON.stringify(content)}}`,
  end(stream, settlement) {
    if (settlement.kind === 'failed') {
      stream.write(JSON.stringify({ type: 'error', code: settlement.code }));
      return;
    }
    stream.write(
      JSON.stringify({
        type: 'done',
        usage: usageBody(settlement.usage),
        // What was charged. A sandbox key's request is free (DESIGN.md §6): cost_micro is "0" and
        // notional_cost_micro is what it would have cost (the usage at the pool's price).
        cost_micro: settlement.costMicro.toString(),
        ...(settlement.notionalCostMicro === undefined
          ? {}
          : { notional_cost_micro: settlement.notionalCostMicro.toString() }),
        reservation_id: settlement.reservationId,
        // Every token was delivered but the store failed to settle: the charge (cost_micro,
        // recorded in an unsettled spend row) is settled by a job once the store is back.
        // Absent means settled.
        ...(settlement.pending ? { settlement: 'pending' } : {}),
      }),
    );
  },
};

const NATIVE: AnswerShape<unknown> = { error: errorResponse, answer: () => NATIVE_ANSWER };

/** POST /api/v1/inference — the native SSE route: parse, then the pipeline (./run-inference.ts). */
export function inferenceRoute(services: Services): Hono<KeyEnv> {
  return new Hono<KeyEnv>().post('/api/v1/inference', requireApiKey(services), async (c) => {
    const parsed = v.safeParse(InferenceRequest, await readJson(c));
    if (!parsed.success) {
      return errorResponse(
        c,
        new AppError('invalid_request', `Invalid request: ${v.summarize(parsed.issues)}`),
      );
    }
    const body = parsed.output;
    const input = {
      prompt: body.prompt ?? chatText(body.messages ?? []),
      messages: body.messages,
      maxTokens: body.max_tokens,
      pool: body.pool,
      userId: body.user,
      channelId: body.channel,
    };
    return runInference(c, services, c.get('apiKey'), input, NATIVE, undefined);
  });
}
