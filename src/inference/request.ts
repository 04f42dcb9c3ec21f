import * as v from 'valibot';
import { MAX_COMPLETION_TOKENS, MAX_MESSAGES } from './estimate.js';

const Id = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1–64 characters of [A-Za-z0-9_-]'));

/** The native request body (DESIGN.md §4). Exactly one of `prompt` and `messages`. */
export const InferenceRequest = v.pipe(
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

export type InferenceRequest = v.InferOutput<typeof InferenceRequest>;

/** The text the model reads, for the token estimate and the upstream. */
export function promptText(body: InferenceRequest): string {
  return (
    body.prompt ?? (body.messages ?? []).map((message) => `${message.role}: ${message.content}`).join('\n')
  );
}
