import * as v from 'valibot';
import type { StatusReport } from './state-machine.js';

// Ids arrive as numbers or strings; both are kept as text of at most 64 characters.
const Id = v.pipe(
  v.union([v.pipe(v.number(), v.integer(), v.transform(String)), v.pipe(v.string(), v.trim())]),
  v.maxLength(64),
);
const Amount = v.pipe(v.union([v.pipe(v.number(), v.transform(String)), v.string()]), v.maxLength(64));

/** The members of an IPN body we act on; the provider sends more, which only the signature covers. */
const IpnBody = v.looseObject({
  payment_id: v.nullish(Id),
  invoice_id: v.nullish(Id),
  order_id: v.nullish(Id),
  payment_status: v.pipe(v.string(), v.minLength(1), v.maxLength(64)),
  actually_paid: v.nullish(Amount),
  pay_currency: v.nullish(v.pipe(v.string(), v.maxLength(32))),
  // Milliseconds since the epoch (the provider sends a number; a numeric string is read too).
  updated_at: v.nullish(
    v.union([v.pipe(v.number(), v.integer(), v.minValue(0)), v.pipe(v.string(), v.regex(/^\d{1,15}$/))]),
  ),
});

/** A parsed, signature-checked IPN body as a report for the state machine; a message when malformed. */
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
    updatedAtMs: ipn.updated_at === null || ipn.updated_at === undefined ? 0 : Number(ipn.updated_at),
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
