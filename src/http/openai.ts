import { type Context, Hono } from 'hono';
import * as v from 'valibot';
import { AppError, asAppError, type ErrorCode } from '../errors.js';
import { MAX_COMPLETION_TOKENS, MAX_MESSAGES } from '../inference/estimate.js';
import { openUpstream, prepare, relay } from '../inference/run.js';
import type { Services } from '../services.js';
import { tierLimits } from '../tenants/tiers.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';
import { clientSignal } from './context.js';
import { readJson } from './json-body.js';
import { sseResponse } from './sse.js';

/**
 * The OpenAI-compatible surface, so OpenAI clients work unchanged: GET /v1/models (the pools the
 * key may use) and POST /v1/chat/completions (stream, with `stream_options.include_usage`, or
 * not). `model` is a pool name or an alias (MODEL_ALIASES). The same stages as the native route; errors in OpenAI's shape.
 */
const ChatRequest = v.object({
  model: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  messages: v.pipe(
    v.array(
      v.object({
        role: v.picklist(['system', 'developer', 'user', 'assistant', 'tool']),
        content: v.union([v.pipe(v.string(), v.maxLength(200_000)), v.null()]),
      }),
    ),
    v.minLength(1),
    v.maxLength(MAX_MESSAGES),
  ),
  max_tokens: v.optional(
    v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_COMPLETION_TOKENS))),
  ),
  max_completion_tokens: v.optional(
    v.nullable(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_COMPLETION_TOKENS))),
  ),
  // One choice per request: more would be more upstream calls than were reserved for.
  n: v.optional(v.nullable(v.number())),
  stream: v.optional(v.nullable(v.boolean())),
  stream_options: v.optional(v.nullable(v.object({ include_usage: v.optional(v.boolean()) }))),
  user: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/))),
});

const OPENAI_TYPES: Partial<Record<ErrorCode, string>> = {
  invalid_request: 'invalid_request_error',
  model_not_found: 'invalid_request_error',
  unauthorized: 'authentication_error',
  budget_exceeded: 'insufficient_quota',
  rate_limited: 'rate_limit_error',
  forbidden: 'permission_error',
  tenant_frozen: 'permission_error',
  not_found: 'not_found_error',
  method_not_allowed: 'invalid_request_error',
  payload_too_large: 'invalid_request_error',
  unsupported_media_type: 'invalid_request_error',
};

/**
 * `{"error":{"message","type","param","code"}}`, OpenAI's error body, with our status; `param`
 * names the offending request field when the error's details give one.
 */
export function openAiError(c: Context, thrown: unknown): Response {
  const error = asAppError(thrown);
  return c.json(
    {
      error: {
        message: error.message,
        type: OPENAI_TYPES[error.code] ?? 'api_error',
        param: typeof error.details.param === 'string' ? error.details.param : null,
        code: error.code,
      },
    },
    error.status,
  );
}

export function openAiRoutes(services: Services): Hono<KeyEnv> {
  const app = new Hono<KeyEnv>();
  const auth = requireApiKey(services, openAiError);

  app.get('/v1/models', auth, (c) => {
    const key = c.get('apiKey');
    const pools: readonly string[] = key.sandbox
      ? ['cheap']
      : tierLimits(services.config.tiers, key.tenantTier).pools;
    const aliases = Object.entries(services.config.modelAliases)
      .filter(([, pool]) => pools.includes(pool))
      .map(([alias]) => alias);
    return c.json({
      object: 'list',
      data: [...pools, ...aliases].map((id) => ({ id, object: 'model', created: 0, owned_by: 'spicegate' })),
    });
  });

  app.post('/v1/chat/completions', auth, async (c) => {
    const key = c.get('apiKey');
    const parsed = v.safeParse(ChatRequest, await readJson(c));
    if (!parsed.success) {
      return openAiError(
        c,
        new AppError('invalid_request', `Invalid request: ${v.summarize(parsed.issues)}`),
      );
    }
    const body = parsed.output;
    if (body.n !== undefined && body.n !== null && body.n !== 1) {
      return openAiError(c, new AppError('invalid_request', 'Only n = 1 is supported', { param: 'n' }));
    }
    // `max_completion_tokens` replaces the deprecated `max_tokens`; given both, the smaller holds.
    const caps = [body.max_tokens, body.max_completion_tokens].filter((cap) => typeof cap === 'number');
    const messages = body.messages.map((message) => ({ role: message.role, content: message.content ?? '' }));
    const input = {
      prompt: messages.map((message) => `${message.role}: ${message.content}`).join('\n'),
      messages,
      maxTokens: caps.length === 0 ? undefined : Math.min(...caps),
      pool: body.model,
      userId: body.user,
      stream: body.stream === true,
    };
    const prepared = await prepare(services, key, input);
    for (const [name, value] of Object.entries(prepared.headers)) c.header(name, value);
    if (!prepared.ok) {
      if (prepared.error.code !== 'unknown_pool') return openAiError(c, prepared.error);
      const message = `The model \`${body.model}\` does not exist or you do not have access to it.`;
      return openAiError(c, new AppError('model_not_found', message, { param: 'model' }));
    }
    const clientGone = clientSignal(c);
    const opened = await openUpstream(services, key, input, prepared, clientGone.signal);
    if (!opened.ok) return openAiError(c, opened.error);
    for (const [name, value] of Object.entries(opened.headers)) c.header(name, value);

    const id = `chatcmpl-${prepared.reservationId}`;
    const created = Math.floor(services.clock.now() / 1000);
    const model = prepared.decision.pool;
    const finish = (completionTokens: number) =>
      completionTokens >= prepared.estimate.maxTokens ? 'length' : 'stop';
    const usageOf = (usage: { promptTokens: number; completionTokens: number }) => ({
      prompt_tokens: usage.promptTokens,
      completion_tokens: usage.completionTokens,
      total_tokens: usage.promptTokens + usage.completionTokens,
    });

    if (body.stream !== true) {
      let content = '';
      const outcome = await relay(services, key, prepared, opened.upstream, {
        signal: clientGone.signal,
        onTokens: (contents) => {
          for (const token of contents) content += token;
          return undefined;
        },
      });
      if (outcome.kind === 'failed') {
        return openAiError(c, new AppError(outcome.code, 'The request could not be completed'));
      }
      return c.json({
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content },
            finish_reason: finish(outcome.usage.completionTokens),
          },
        ],
        usage: usageOf(outcome.usage),
      });
    }

    // Token chunks are written from a prefix and a suffix made once: JSON.stringify of the same
    // object per token (key order as here) was a good part of the per-token cost.
    const chunkHead = `{"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},"choices":[{"index":0,"delta":{`;
    const chunkTail = '},"finish_reason":null}]}';
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra });
    let first = true;
    const tokenChunk = (token: string) => {
      const role = first ? '"role":"assistant",' : '';
      first = false;
      return `${chunkHead}${role}"content":${JSON.stringify(token)}${chunkTail}`;
    };
    return sseResponse(
      c,
      async (stream) => {
        const outcome = await relay(services, key, prepared, opened.upstream, {
          signal: clientGone.signal,
          onTokens: (contents) => stream.write(...contents.map(tokenChunk)),
        });
        if (stream.aborted) return;
        if (outcome.kind === 'stalled') return 'abandon';
        if (outcome.kind === 'failed') {
          stream.write(
            JSON.stringify({
              error: { message: 'The request could not be completed', type: 'api_error', code: outcome.code },
            }),
          );
          return;
        }
        stream.write(
          chunk([{ index: 0, delta: {}, finish_reason: finish(outcome.usage.completionTokens) }]),
          ...(body.stream_options?.include_usage === true
            ? [chunk([], { usage: usageOf(outcome.usage) })]
            : []),
          '[DONE]',
        );
      },
      () => clientGone.abort(),
    );
  });
  return app;
}
