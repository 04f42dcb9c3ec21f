import { costMicro, type Pool, type Prices } from '../pricing/pricing.js';

// 256 tokens when the caller names no max_tokens: enough for a short answer, small enough that the
// reservation does not lock much budget.
export const DEFAULT_MAX_TOKENS = 256;

/** The largest `max_tokens` a request may ask for (both inference routes). */
export const MAX_COMPLETION_TOKENS = 4_096;
/** The most messages a request may carry (both inference routes). */
export const MAX_MESSAGES = 256;

// What a chat template adds around the text: OpenAI's format costs 3–4 tokens a message plus 3 to
// prime the reply, Llama-style templates ~5 a message plus a few to begin; twice that, for margin.
// (The role names themselves are in the prompt text, as `role: content` lines.)
export const TEMPLATE_TOKENS_PER_MESSAGE = 8;
export const TEMPLATE_TOKENS_PER_REQUEST = 16;

/**
 * The most tokens any request's reservation can count: a prompt of as many UTF-8 bytes as the
 * largest body (its `role: content` lines are shorter than their JSON), the template's tokens for
 * the most messages, and the largest completion.
 */
export function largestEstimateTokens(maxBodyBytes: number): number {
  return (
    maxBodyBytes +
    TEMPLATE_TOKENS_PER_MESSAGE * MAX_MESSAGES +
    TEMPLATE_TOKENS_PER_REQUEST +
    MAX_COMPLETION_TOKENS
  );
}

export interface Estimate {
  /** The expected prompt count (~4 characters a token): billed when the upstream reports none. */
  promptTokens: number;
  /** The most prompt tokens any byte-level tokenizer can report: reserved, and the cap on a report. */
  maxPromptTokens: number;
  maxTokens: number;
  /** The reservation: maxPromptTokens + max_tokens, priced, rounded up. */
  costMicro: bigint;
}

/**
 * A pessimistic estimate: the reservation must be an upper bound of what the upstream can report.
 * A BPE tokenizer over UTF-8 bytes never yields more tokens than the text has bytes, so the prompt
 * is reserved at its UTF-8 length plus the template's tokens (a prompt counted one token per
 * character — CJK text — is then still covered); the completion at its whole budget.
 */
export function estimate(
  pool: Pool,
  prompt: string,
  maxTokens: number | undefined,
  prices: Prices,
  /** How many messages the prompt is made of (a plain prompt goes upstream as one). */
  messages = 1,
): Estimate {
  const promptTokens = Math.max(1, Math.ceil(prompt.length / 4));
  const maxPromptTokens =
    utf8Length(prompt) + TEMPLATE_TOKENS_PER_MESSAGE * messages + TEMPLATE_TOKENS_PER_REQUEST;
  const completion = maxTokens ?? DEFAULT_MAX_TOKENS;
  return {
    promptTokens,
    maxPromptTokens,
    maxTokens: completion,
    costMicro: costMicro(pool, maxPromptTokens + completion, prices),
  };
}

/** Bytes of `text` in UTF-8 (as TextEncoder writes it: a lone surrogate becomes 3 bytes), without encoding it. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i += 1) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i += 1;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}
