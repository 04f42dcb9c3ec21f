import * as v from 'valibot';

/** Input pieces shared by several routers. */
export const TenantId = v.pipe(v.string(), v.regex(/^ten_[0-9a-f]{32}$/, 'must be a tenant id (ten_…)'));

/**
 * A positive amount of micro-credits as a decimal string ("5000000"), 1 .. 10^15, parsed to a
 * bigint. Numbers are refused: money never travels as a float (DESIGN.md §2).
 */
export const PositiveMicro = v.pipe(
  v.string(),
  v.regex(/^[1-9]\d{0,15}$/, 'must be a positive whole number of micro-credits as a decimal string'),
  v.transform((text) => BigInt(text)),
  v.maxValue(1_000_000_000_000_000n, 'must be at most 1000000000000000 (10^15)'),
);

/** A caller-chosen idempotency id: the store's id alphabet. */
export const GrantId = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"'),
);
