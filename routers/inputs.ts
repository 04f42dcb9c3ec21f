import * as v from 'valibot';
import { USAGE_GROUPS } from '../src/billing/usage.js';
import { MAX_AMOUNT_MICRO, MAX_COUNT } from '../src/budget/bounds.js';

/** Input pieces shared by several routers. */
export const TenantId = v.pipe(v.string(), v.regex(/^ten_[0-9a-f]{32}$/, 'must be a tenant id (ten_…)'));

/**
 * A positive amount of micro-credits as a decimal string ("5000000"), 1 .. 10^15 (the engine's
 * bound on an amount), parsed to a bigint. Numbers are refused: money never travels as a float
 * (DESIGN.md §2).
 */
export const PositiveMicro = v.pipe(
  v.string(),
  v.regex(/^[1-9]\d{0,15}$/, 'must be a positive whole number of micro-credits as a decimal string'),
  v.transform((text) => BigInt(text)),
  v.maxValue(MAX_AMOUNT_MICRO, `must be at most ${MAX_AMOUNT_MICRO} (10^15)`),
);

/**
 * A monthly cap in micro-credits as a decimal string, 0 .. 10^15: the most the engine accepts as a
 * cap, so a cap set here can never make admission refuse its input. Stays a string (the domain
 * functions take the wire form).
 */
export const CapMicro = v.pipe(
  v.string(),
  v.regex(/^(0|[1-9]\d*)$/, 'must be a whole number of micro-credits as a decimal string'),
  v.check(
    (text) => text.length <= 16 && BigInt(text) <= MAX_AMOUNT_MICRO,
    `must be at most ${MAX_AMOUNT_MICRO} (10^15)`,
  ),
);

/** A limit in requests per minute or tokens per day, 0 .. 10^9: the engine's bound on a count. */
export const RateLimit = v.pipe(
  v.number(),
  v.integer('must be a whole number'),
  v.minValue(0, 'must not be negative'),
  v.maxValue(MAX_COUNT, `must be at most ${MAX_COUNT}`),
);

/** A caller-chosen idempotency id: the store's id alphabet. */
export const GrantId = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"'),
);

/**
 * True when `text` holds a C0 control character, DEL or a C1 control character (U+0000–U+001F,
 * U+007F–U+009F); tab, line feed and carriage return pass when `allowLineBreaks`.
 */
function hasControl(text: string, allowLineBreaks: boolean): boolean {
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (allowLineBreaks && (code === 0x09 || code === 0x0a || code === 0x0d)) continue;
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return true;
  }
  return false;
}

/** Trimmed, not empty, at most `maxLength`, and no control character but those `lineBreaks` allows. */
const plainText = (maxLength: number, lineBreaks: boolean, message: string) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.minLength(1, 'must not be empty'),
    v.maxLength(maxLength, `must be at most ${maxLength} characters`),
    v.check((text) => !hasControl(text, lineBreaks), message),
  );

/**
 * A display name (tenant, key): no control characters at all — a name is one line, and PostgreSQL
 * refuses a NUL byte in text.
 */
export const Name = (maxLength: number) => plainText(maxLength, false, 'must not contain control characters');

/**
 * Free text such as a grant's reason: tab and line breaks are allowed, so a note may run over
 * several lines; every other control character is refused.
 */
export const Text = (maxLength: number) =>
  plainText(maxLength, true, 'must not contain control characters other than tab and line breaks');

/**
 * An instant as ISO 8601: a UTC date (`2026-03-01`, its midnight) or a date-time with its zone
 * (`2026-03-01T12:00:00Z`). A date past its month's end (`2026-02-30`) is refused, not rolled over.
 */
export const Instant = v.pipe(
  v.string(),
  v.regex(
    /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/,
    'must be an ISO 8601 date (2026-03-01) or date-time with a zone (2026-03-01T00:00:00Z)',
  ),
  v.check((text) => {
    const day = new Date(`${text.slice(0, 10)}T00:00:00Z`);
    return !Number.isNaN(day.getTime()) && day.toISOString().startsWith(text.slice(0, 10));
  }, 'must be a real calendar date'),
  // The year 0000 is a valid ISO date but not a PostgreSQL one.
  v.check((text) => text.slice(0, 4) !== '0000', 'must be in the year 0001 or later'),
  v.transform((text) => new Date(text)),
  v.check((date) => !Number.isNaN(date.getTime()), 'must be a real time of day'),
);

/** A usage report's window and cut (admin.usage, billing.usage): groupBy one of day | pool | key | user; absent, all four. */
export const UsageQuery = {
  from: v.optional(Instant),
  to: v.optional(Instant),
  groupBy: v.optional(v.picklist(USAGE_GROUPS)),
};
