import { costMicro, type Pool, type Prices } from '../pricing/pricing.js';

// 256 tokens when the caller names no max_tokens: enough for a short answer, small enough that the
// reservation does not lock much budget.
export const DEFAULT_MAX_TOKENS = 256;

/** The largest `max_tokens` a request may ask for (both inference routes). */
export const MAX_COMPLETION_TOKENS = 4_096;

/**
 * The most tokens any request's estimate can count: a prompt as long as the largest body (each
 * character takes at least one byte of JSON, and the role prefixes of messages are shorter than
 * their JSON) plus the largest completion.
 */
export function largestEstimateTokens(maxBodyBytes: number): number {
  return Math.ceil(maxBodyBytes / 4) + MAX_COMPLETION_TOKENS;
}

export interface Estimate {
  promptTokens: number;
  maxTokens: number;
  /** The reservation: prompt + max_tokens, priced, rounded up. */
  costMicro: bigint;
}

/** A pessimistic estimate: ~4 characters per token (rounded up), plus the whole completion budget. */
export function estimate(
  pool: Pool,
  prompt: string,
  maxTokens: number | undefined,
  prices: Prices,
): Estimate {
  const promptTokens = Math.max(1, Math.ceil(prompt.length / 4));
  const completion = maxTokens ?? DEFAULT_MAX_TOKENS;
  return {
    promptTokens,
    maxTokens: completion,
    costMicro: costMicro(pool, promptTokens + completion, prices),
  };
}
