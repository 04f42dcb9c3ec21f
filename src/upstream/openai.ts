import * as v from 'valibot';
import { safeJson } from './finn.js';
import { UpstreamUnavailable, type UpstreamUsage } from './port.js';
import type { UpstreamProtocol, UpstreamReader } from './resilient.js';

const Count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1_000_000_000));
const Chunk = v.object({
  choices: v.optional(
    v.array(
      v.object({
        delta: v.optional(v.object({ content: v.optional(v.nullable(v.string())) })),
      }),
    ),
  ),
  usage: v.optional(v.nullable(v.object({ prompt_tokens: Count, completion_tokens: Count }))),
  error: v.optional(v.unknown()),
});

/**
 * Any OpenAI-compatible server: `POST <UPSTREAM_URL>/chat/completions` (UPSTREAM_URL is the API
 * base, e.g. `https://api.openai.com/v1`), always streamed with `stream_options.include_usage`, so
 * its usage chunk is the usage authority. The model is `UPSTREAM_MODELS[pool]`, else the pool name.
 */
export function openAiProtocol(deps: {
  url: string;
  apiKey?: string | undefined;
  models: Record<string, string>;
}): UpstreamProtocol {
  const url = `${deps.url.replace(/\/+$/, '')}/chat/completions`;
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'text/event-stream',
    ...(deps.apiKey === undefined ? {} : { authorization: `Bearer ${deps.apiKey}` }),
  };
  return {
    name: 'openai',
    build: async (request) => ({
      url,
      headers,
      body: JSON.stringify({
        model: deps.models[request.pool] ?? request.pool,
        messages: request.messages ?? [{ role: 'user', content: request.prompt }],
        max_tokens: request.maxTokens,
        stream: true,
        stream_options: { include_usage: true },
      }),
    }),
    read: readOpenAi,
  };
}

function readOpenAi(): UpstreamReader {
  let usage: UpstreamUsage | undefined;
  // After [DONE] the body is still read to its end, so the keep-alive connection goes back to the pool.
  let ended = false;
  return {
    usage: () => usage,
    events: {
      unterminated: 'The upstream stream ended without [DONE]',
      ended: () => ended,
      event(data) {
        if (data === '[DONE]') {
          ended = true;
          return undefined;
        }
        const parsed = v.safeParse(Chunk, safeJson(data));
        if (!parsed.success) throw new UpstreamUnavailable('The upstream sent an invalid chunk');
        const chunk = parsed.output;
        if (chunk.error !== undefined) throw new UpstreamUnavailable('The upstream failed mid-stream');
        if (chunk.usage != null) {
          usage = {
            promptTokens: chunk.usage.prompt_tokens,
            completionTokens: chunk.usage.completion_tokens,
          };
        }
        return chunk.choices?.[0]?.delta?.content ?? undefined;
      },
    },
  };
}
