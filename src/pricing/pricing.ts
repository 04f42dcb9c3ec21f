/**
 * Pools and prices (DESIGN.md §4). Money is integer micro-credits; a request costs its prompt and
 * completion tokens at the pool's price, rounded up, at least 1 µ. These are the built-in
 * defaults; POOL_PRICES overrides them, and `admin.pricing.set` at runtime (./price-book.ts).
 */
export const POOLS = ['cheap', 'standard', 'reasoning', 'architect', 'flagship'] as const;
export type Pool = (typeof POOLS)[number];

/** Micro-credits per 1,000 tokens (1 USD = 1,000,000 µ): $0.20 … $15 per million tokens. */
export const DEFAULT_PRICES: Record<Pool, bigint> = {
  cheap: 200n,
  standard: 1_000n,
  reasoning: 4_000n,
  architect: 8_000n,
  flagship: 15_000n,
};

export type Prices = Readonly<Record<Pool, bigint>>;

/** Rounds up in bigint; never less than 1 µ for a request. `prices`: POOL_PRICES, else the defaults. */
export function costMicro(pool: Pool, tokens: number, prices: Prices = DEFAULT_PRICES): bigint {
  return costAt(prices[pool], tokens);
}

/** `tokens` at a price in micro-credits per 1,000 tokens: rounded up, at least 1 µ. */
export function costAt(microPer1kTokens: bigint, tokens: number): bigint {
  const cost = (BigInt(tokens) * microPer1kTokens + 999n) / 1000n;
  return cost < 1n ? 1n : cost;
}

export function isPool(value: string): value is Pool {
  return (POOLS as readonly string[]).includes(value);
}
