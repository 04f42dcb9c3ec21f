import { type Context, Hono } from 'hono';
import * as v from 'valibot';
import { AppError, asAppError, type ErrorCode } from '../errors.js';
import type { Admitted } from '../inference/admit.js';
import { MAX_COMPLETION_TOKENS, MAX_MESSAGES } from '../inference/estimate.js';
import { chatText } from '../inference/request.js';
import type { Settlement, Usage } from '../inference/settle.js';
import type { Services } from '../services.js';
import { tierLimits } from '../tenants/tiers.js';
import { type KeyEnv, requireApiKey } from './api-key-auth.js';
import { readJson } from './json-body.js';
import { type Answer, type AnswerShape, runInference, usageBody } from './run-inference.js';
import type { SseStream } from './sse.js';

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
type ChatRequest = v.InferOutput<typeof ChatRequest>;

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

  const chat: AnswerShape<ChatRequest> = {
    error: (c, error, body) =>
      openAiError(
        c,
        error.code === 'unknown_pool'
          ? new AppError(
              'model_not_found',
              `The model \`${body.model}\` does not exist or you do not have access to it.`,
              { param: 'model' },
            )
          : error,
      ),
    answer: (admitted, body) =>
      new ChatAnswer(admitted, services.clock.now(), body.stream_options?.include_usage === true),
  };

  app.post('/v1/chat/completions', auth, async (c) => {
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
      prompt: chatText(messages),
      messages,
      maxTokens: caps.length === 0 ? undefined : Math.min(...caps),
      pool: body.model,
      userId: body.user,
      stream: body.stream === true,
    };
    return runInference(c, services, c.get('apiKey'), input, chat, body);
  });
  return app;
}

/** One chat completion: `chat.completion.chunk` events and `[DONE]`, or one `chat.completion` body. */
class ChatAnswer implements Answer {
  private readonly id: string;
  private readonly created: number;
  private readonly model: string;
  private readonly maxTokens: number;
  // A token's chunk is this prefix (key order as in `chunk`), the token and a fixed suffix: no
  // JSON.stringify of a whole object per token.
  private readonly chunkHead: string;
  private first = true;

  constructor(
    admitted: Admitted,
    nowMs: number,
    private readonly includeUsage: boolean,
  ) {
    this.id = `chatcmpl-${admitted.reservationId}`;
    this.created = Math.floor(nowMs / 1000);
    this.model = admitted.decision.pool;
    this.maxTokens = admitted.estimate.maxTokens;
    this.chunkHead = `{"id":${JSON.stringify(this.id)},"object":"chat.completion.chunk","created":${this.created},"model":${JSON.stringify(this.model)},"choices":[{"index":0,"delta":{`;
  }

  token(content: string): string {
    const role = this.first ? '"role":"assistant",' : '';
    this.first = false;
    return `${this.chunkHead}${role}"content":${JSON.stringify(content)}},"finish_reason":null}]}`;
  }

  end(stream: SseStream, settlement: Exclude<Settlement, { kind: 'stalled' }>): void {
    if (settlement.kind === 'failed') {
      stream.write(
        JSON.stringify({
          error: { message: 'The request could not be completed', type: 'api_error', code: settlement.code },
        }),
      );
      return;
    }
    stream.write(
      this.chunk([{ index: 0, delta: {}, finish_reason: this.finish(settlement.usage) }]),
      ...(this.includeUsage ? [this.chunk([], { usage: usageBody(settlement.usage) })] : []),
      '[DONE]',
    );
  }

  whole(content: string, settlement: Exclude<Settlement, { kind: 'failed' }>) {
    return {
      id: this.id,
      object: 'chat.completion',
      created: this.created,
      model: this.model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content },
          finish_reason: this.finish(settlement.usage),
        },
      ],
      usage: usageBody(settlement.usage),
    };
  }

  private chunk(choices: unknown[], extra: Record<string, unknown> = {}): string {
    const { id, created, model } = this;
    return JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra });
  }

  private finish(usage: Usage): 'length' | 'stop' {
    return usage.completionTokens >= this.maxTokens ? 'length' : 'stop';
  }
}
