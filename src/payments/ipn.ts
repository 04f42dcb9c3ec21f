import * as v from 'valibot';
import type { StatusReport } from './state-machine.js';

// Ids arrive as numbers or strings; both are kept as text of at most 64 characters.
export const ProviderId = v.pipe(
  v.union([v.pipe(v.number(), v.integer(), v.transform(String)), v.pipe(v.string(), v.trim())]),
  v.maxLength(64),
);
const Amount = v.pipe(v.union([v.pipe(v.number(), v.transform(String)), v.string()]), v.maxLength(64));
// The latest time a report may carry: far beyond any real one, and within PostgreSQL's bigint.
const MAX_TIME_MS = 8_640_000_000_000_000;
/**
 * When the provider last changed the payment, as ms since the epoch: IPNs send milliseconds (a
 * number, or its digits as text), the API's answers an ISO 8601 date; both are read.
 */
const UpdatedAt = v.union([
  v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_TIME_MS)),
  v.pipe(v.string(), v.regex(/^\d{1,16}$/), v.transform(Number), v.maxValue(MAX_TIME_MS)),
  v.pipe(
    v.string(),
    v.isoTimestamp(),
    v.transform((text) => Date.parse(text)),
    v.minValue(0),
    v.maxValue(MAX_TIME_MS),
  ),
]);

/**
 * The members of a payment report we act on — an IPN body, or the API's answer for one payment:
 * the provider sends more, which only the signature covers.
 */
const IpnBody = v.looseObject({
  payment_id: v.nullish(ProviderId),
  invoice_id: v.nullish(ProviderId),
  order_id: v.nullish(ProviderId),
  payment_status: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  actually_paid: v.nullish(Amount),
  pay_currency: v.nullish(v.pipe(v.string(), v.maxLength(32))),
  updated_at: v.nullish(UpdatedAt),
});

/**
 * A parsed, signature-checked IPN body (or the API's answer for a payment) as a report for the
 * state machine; a message when malformed.
 */
export function ipnReport(body: unknown): { report: StatusReport } | { error: string } {
  const parsed = v.safeParse(IpnBody, body);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const field = issue.path?.map((segment) => String(segment.key)).join('.') ?? 'body';
    return { error: `${field}: ${issue.message}` };
  }
  const ipn = parsed.output;
  const report: StatusReport = {
    status: ipn.payment_status,
    updatedAtMs: ipn.updated_at ?? 0,
    ...defined('orderId', ipn.order_id),
    ...defined('invoiceId', ipn.invoice_id),
    ...defined('providerPaymentId', ipn.payment_id),
    ...defined('actuallyPaid', ipn.actually_paid),
    ...defined('payCurrency', ipn.pay_currency),
  };
  if (
    report.orderId === undefined &&
    report.invoiceId === undefined &&
    report.providerPaymentId === undefined
  ) {
    return { error: 'order_id: an IPN must name its payment (order_id, invoice_id or payment_id)' };
  }
  return { report };
}

function defined<K extends string>(key: K, value: string | null | undefined): { [P in K]?: string } {
  return value === null || value === undefined || value === ''
    ? {}
    : ({ [key]: value } as { [P in K]: string });
}

/**
 * What the per-payment throttle counts an IPN under, read from the unverified body before any
 * HMAC work: the order id (our payment id), else the invoice id, else the provider's payment id.
 */
export function throttleSubject(body: unknown): string | undefined {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined;
  const record = body as Record<string, unknown>;
  for (const name of ['order_id', 'invoice_id', 'payment_id']) {
    const value = record[name];
    if ((typeof value === 'string' && value !== '') || typeof value === 'number') {
      return `${name}:${String(value).slice(0, 64)}`;
    }
  }
  return undefined;
}

// IPNs are two levels deep (the `fee` object); the key sort that signs them recurses.
const MAX_DEPTH = 16;

/** Whether a parsed body nests objects and arrays at most MAX_DEPTH deep (checked without recursion). */
export function shallowEnough(body: unknown): boolean {
  let level: unknown[] = [body];
  for (let depth = 0; level.length > 0; depth += 1) {
    if (depth > MAX_DEPTH) return false;
    const next: unknown[] = [];
    for (const value of level) {
      if (value !== null && typeof value === 'object') next.push(...Object.values(value));
    }
    level = next;
  }
  return true;
}
