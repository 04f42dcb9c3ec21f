import { safeJson } from './finn.js';
import type { HttpResponse } from './http.js';
import type { UpstreamProtocol, UpstreamReader } from './http-upstream.js';
import { isTokenCount, type UpstreamRequest, UpstreamUnavailable, type UpstreamUsage } from './port.js';

/**
 * Any OpenAI-compatible server: `POST <UPSTREAM_URL>/chat/completions` (UPSTREAM_URL is the API
 * base, e.g. `https://api.openai.com/v1`). Streamed with `stream_options.include_usage` when the
 * caller reads a stream (the usage chunk is the usage authority), else one JSON completion (its
 * `usage`). The model is `UPSTREAM_MODELS[pool]`, else the pool name.
 */
export function openAiProtocol(deps: {
  url: string;
  apiKey?: string | undefined;
  models: Record<string, string>;
}): UpstreamProtocol {
  const url = `${deps.url.replace(/\/+$/, '')}/chat/completions`;
  const headers = (accept: string): Record<string, string> => ({
    'content-type': 'application/json',
    accept,
    ...(deps.apiKey === undefined ? {} : { authorization: `Bearer ${deps.apiKey}` }),
  });
  const streamed = headers('text/event-stream');
  const whole = headers('application/json');
  return {
    name: 'openai',
    build: async (request) => ({
      url,
      headers: request.stream ? streamed : whole,
      body: JSON.stringify({
        model: deps.models[request.pool] ?? request.pool,
        messages: request.messages ?? [{ role: 'user', content: request.prompt }],
        max_tokens: request.maxTokens,
        // A caller that reads no stream gets the answer in one piece: one JSON body to parse.
        ...(request.stream ? { stream: true, stream_options: { include_usage: true } } : {}),
      }),
    }),
    read: readOpenAi,
  };
}

function readOpenAi(response: HttpResponse, request: UpstreamRequest): UpstreamReader {
  let usage: UpstreamUsage | undefined;
  // After [DONE] the body is still read to its end, so the keep-alive connection goes back to the pool.
  let ended = false;
  // What we asked for, unless the answer says otherwise: a server that omits the content type (or
  // spells it in capitals) must not have its stream parsed as JSON, nor the reverse.
  const type = (response.header('content-type') ?? '').trim().toLowerCase();
  const whole =
    type.startsWith('application/json') || (!request.stream && !type.startsWith('text/event-stream'));
  return {
    usage: () => usage,
    body: whole
      ? {
          kind: 'json',
          read(json) {
            const completion = object(json);
            if (completion === undefined || !Array.isArray(completion.choices)) throw invalid();
            if (completion.error !== undefined) throw new UpstreamUnavailable('The upstream failed');
            // No message content (a tool call, an empty choice list) is an empty answer, not a failure.
            const content = object(object(completion.choices[0])?.message)?.content ?? '';
            if (typeof content !== 'string') throw invalid();
            // Without a usage report, the gateway's own estimate (~4 characters a token, as estimate.ts).
            const reported = usageOf(completion.usage) ?? { completionTokens: Math.ceil(content.length / 4) };
            usage = reported;
            // An upstream that ignored max_tokens: what it sent beyond the cap (paid for by nobody) is
            // cut, in proportion to what it says it produced.
            const text =
              reported.completionTokens > request.maxTokens
                ? content.slice(
                    0,
                    Math.floor((content.length * request.maxTokens) / reported.completionTokens),
                  )
                : content;
            return text === '' ? [] : [text];
          },
        }
      : {
          kind: 'sse',
          events: {
            unterminated: 'The upstream stream ended without [DONE]',
            ended: () => ended,
            event(data) {
              if (data === '[DONE]') {
                ended = true;
                return undefined;
              }
              const chunk = object(safeJson(data));
              if (chunk === undefined) throw invalid();
              if (chunk.error !== undefined) throw new UpstreamUnavailable('The upstream failed mid-stream');
              usage = usageOf(chunk.usage) ?? usage;
              if (chunk.choices === undefined) return undefined;
              if (!Array.isArray(chunk.choices)) throw invalid();
              if (chunk.choices.length === 0) return undefined;
              const choice = object(chunk.choices[0]);
              if (choice === undefined) throw invalid();
              if (choice.delta === undefined) return undefined;
              const delta = object(choice.delta);
              if (delta === undefined) throw invalid();
              const content = delta.content;
              if (content === undefined || content === null) return undefined;
              if (typeof content !== 'string') throw invalid();
              return content;
            },
          },
        },
  };
}

// Chunks are checked by hand, not with a valibot schema: this runs for every chunk of every
// stream, and a schema parse copies each object.
const invalid = () => new UpstreamUnavailable('The upstream sent an invalid chunk');

function object(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/** `usage` of a chunk or a completion: absent or null → undefined; malformed → invalid. */
function usageOf(value: unknown): UpstreamUsage | undefined {
  if (value === undefined || value === null) return undefined;
  const usage = object(value);
  if (usage === undefined || !isTokenCount(usage.prompt_tokens) || !isTokenCount(usage.completion_tokens))
    throw invalid();
  return { promptTokens: usage.prompt_tokens, completionTokens: usage.completion_tokens };
}
