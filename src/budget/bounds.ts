/**
 * The engine's bounds on the figures it accepts (lua/admit.v4.lua, lua/credit.v2.lua and their
 * memory twins in src/store/memory/scripts/). The API validates every limit against these, so a
 * value the engine would refuse is a 400 when it is set, never a 500 on every later request.
 * The Lua scripts spell the same numbers out (EVAL has no imports); tests/unit/bounds.test.ts
 * fails if they drift apart.
 */

/** Requests per minute and tokens per day: count × 60000 stays an exact integer below 2^53. */
export const MAX_COUNT = 1_000_000_000;

/** A reservation, a grant and a monthly cap, in micro-credits (10^15 µ = 1 billion USD). */
export const MAX_AMOUNT_MICRO = 1_000_000_000_000_000n;

/**
 * A tenant's credited balance: below 2^52, since some clients (ioredis's parser) read larger
 * integer replies inexactly. The credit script refuses a grant that would pass it.
 */
export const MAX_BALANCE_MICRO = 2n ** 52n - 1n;
