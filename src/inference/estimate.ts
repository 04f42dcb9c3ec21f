import { costMicro, type Pool, type Prices } from '../pricing/pricing.js';

// 256 tokens when the caller names no max_tokens: enough for a short answer, small enough that the
// reservation does not lock much budget.
export const DEFAULT_MAX_TOKENS = 256;

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
