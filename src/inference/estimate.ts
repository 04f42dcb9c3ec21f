import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import { costMicro, isPool, POOLS, type Pool, type Prices } from '../pricing/pricing.js';
import { tierLimits } from '../tenants/tiers.js';
import type { InferenceInput } from './request.js';

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
  /**
   * The pool's price for this tenant when the request was estimated (micro-credits per 1,000
   * tokens): settlement charges at it, so a price changed mid-request reaches only later requests.
   */
  microPer1kTokens: bigint;
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
    microPer1kTokens: prices[pool],
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

export interface PoolDecision {
  /** The name the caller asked for (an alias as given), or `default`. */
  requested: string;
  pool: Pool;
  reason: 'as_requested' | 'sandbox' | 'tier' | 'default';
}

export type Estimated =
  | { ok: true; decision: PoolDecision; estimate: Estimate }
  | { ok: false; error: AppError };

/**
 * Stage 1: the pool that serves the request, and the most it can cost there (the reservation). A
 * name that is no pool is refused here, before admission: nothing is reserved and no rate limit
 * counts it. `config.prices`: the key's tenant's prices now (`services.prices.pricesFor`).
 */
export function estimateRequest(
  config: Pick<Config, 'tiers' | 'modelAliases' | 'prices'>,
  key: VerifiedKey,
  input: InferenceInput,
): Estimated {
  const decision = choosePool(config, key, input.pool);
  if (decision === undefined) {
    return {
      ok: false,
      error: new AppError(
        'unknown_pool',
        `Unknown pool ${JSON.stringify(input.pool)}; pools: ${POOLS.join(', ')}`,
      ),
    };
  }
  return {
    ok: true,
    decision,
    estimate: estimate(decision.pool, input.prompt, input.maxTokens, config.prices, input.messages?.length),
  };
}

/**
 * Which pool serves the request: sandbox keys get `cheap`; otherwise the tier's pools. A pool the
 * caller may not use is replaced by the best allowed one (the decision says why); a name that is
 * neither a pool nor an alias of one gives `undefined`.
 */
function choosePool(
  config: Pick<Config, 'tiers' | 'modelAliases'>,
  key: VerifiedKey,
  requested: string | undefined,
): PoolDecision | undefined {
  const allowed: readonly Pool[] = key.sandbox ? ['cheap'] : tierLimits(config.tiers, key.tenantTier).pools;
  const best = allowed.at(-1) ?? 'cheap';
  if (requested === undefined) {
    const pool = allowed.includes('standard') ? 'standard' : best;
    return { requested: 'default', pool, reason: 'default' };
  }
  const asked = config.modelAliases[requested] ?? requested;
  if (!isPool(asked)) return undefined;
  if (allowed.includes(asked)) return { requested, pool: asked, reason: 'as_requested' };
  // The best allowed pool below the one asked for (pools are ordered cheapest first).
  const below = allowed.filter((pool) => POOLS.indexOf(pool) < POOLS.indexOf(asked));
  return { requested, pool: below.at(-1) ?? best, reason: key.sandbox ? 'sandbox' : 'tier' };
}
