import { and, asc, eq, inArray, lt, or, sql } from 'drizzle-orm';
import { type CryptoPaymentRow, cryptoPayments, webhookEvents } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import { type PaymentView, paymentView } from './invoices.js';
import { ProviderError, paymentProvider } from './nowpayments.js';
import { type ApplyOutcome, applyStatusReport, type StatusReport } from './state-machine.js';
import type { PaymentStatus } from './status.js';

/**
 * Reading a payment back from the provider when its IPNs did not bring it to an end: the
 * payment-reconciliation job (src/jobs/payment-reconciliation.ts) and the admin's
 * `admin.payments.stuck` / `admin.payments.reconcile`. What the provider says goes through
 * `applyStatusReport`, the machine the webhook uses.
 *
 * Only payments with a provider payment id (set by their first IPN) can be read: NOWPayments
 * answers GET /payment/:id to the API key, but lists an invoice's payments only to a JWT login
 * (e-mail and password), which the gateway does not hold. A payment no IPN ever reached stays
 * `waiting` here until the provider sends one.
 */

/** Not yet at an end: the predicate of crypto_payments_open_idx, so the scans below use that index. */
export const openPayment = sql`${cryptoPayments.status} not in ('finished', 'failed', 'expired', 'refunded')`;

/**
 * The provider's report of this payment, bound to it by our id; undefined when the provider's
 * answer names another order (the stored provider payment id is not this payment's: never apply).
 */
export function reportFor(payment: { id: string }, report: StatusReport): StatusReport | undefined {
  if (report.orderId !== undefined && report.orderId !== payment.id) return undefined;
  return { ...report, orderId: payment.id };
}

// 30 min: NOWPayments confirms a payment in minutes; half an hour without an end is worth a look.
export const STUCK_AFTER_MS = 30 * 60_000;
// 200: far more than any healthy gateway has open; a longer list is an incident, oldest first.
export const STUCK_LISTED = 200;

/** A payment as the admin procedures show it: what its tenant sees, plus whose it is and the provider's ids. */
export interface AdminPaymentView extends PaymentView {
  tenantId: string;
  /** Null when invoice creation failed after our row was written (the provider may have it). */
  providerInvoiceId: string | null;
  /** Null until the first IPN: such a payment cannot be reconciled (see above). */
  providerPaymentId: string | null;
}

/**
 * Payments without an end (not finished, failed, expired or refunded) opened more than
 * STUCK_AFTER_MS ago, every `partially_paid` one whatever its age (the payer sent too little:
 * nothing is minted until an admin settles it with the payer), and every failed or expired one the
 * provider later reported `finished` (paid, not minted); those the provider reported on first,
 * then oldest first, at most STUCK_LISTED.
 */
export async function stuckPayments(services: Services): Promise<AdminPaymentView[]> {
  const before = new Date(services.clock.now() - STUCK_AFTER_MS);
  // A `finished` report that came after the payment had failed or expired: paid, never minted.
  const finishedTooLate = sql`exists (select 1 from ${webhookEvents} where ${webhookEvents.paymentId} = ${cryptoPayments.id} and ${webhookEvents.status} = 'finished' and ${webhookEvents.reason} = 'after_terminal')`;
  const rows = await asAdmin(services.db, (tx) =>
    tx
      .select()
      .from(cryptoPayments)
      .where(
        or(
          and(
            openPayment,
            or(lt(cryptoPayments.createdAt, before), eq(cryptoPayments.status, 'partially_paid')),
          ),
          and(inArray(cryptoPayments.status, ['failed', 'expired']), finishedTooLate),
        ),
      )
      // Payments the provider has reported on first: an invoice nobody paid (no IPN ever) sorts
      // last, so abandoned invoices never hide the ones that need a look.
      .orderBy(
        sql`${cryptoPayments.providerPaymentId} is null`,
        asc(cryptoPayments.createdAt),
        asc(cryptoPayments.id),
      )
      .limit(STUCK_LISTED),
  );
  return rows.map(adminPaymentView);
}

export function adminPaymentView(row: CryptoPaymentRow): AdminPaymentView {
  return {
    ...paymentView(row),
    tenantId: row.tenantId,
    providerInvoiceId: row.providerInvoiceId,
    providerPaymentId: row.providerPaymentId,
  };
}

/** What `admin.payments.reconcile` answers: the state machine's outcome and where the payment stands. */
export type ReconcileResult = ApplyOutcome & {
  paymentId: string;
  /** The payment's status after the call. */
  paymentStatus: PaymentStatus;
  /** What the provider reported (as sent; an unknown status is recorded and ignored). */
  providerStatus: string;
};

/**
 * An admin's reconcile: reads the payment from the provider and applies the report, whatever it
 * says (a duplicate or an ignored report is recorded too), with `requestId` on its webhook event
 * so the event names the admin. 404 for an unknown payment, 409 when it has no provider payment id
 * (or the provider's answer names another order), 503 `provider_unavailable` when the provider
 * limits, fails or refuses. A report applied (whatever its outcome) is audited as
 * `payment.reconcile` in the state machine's transaction; a refusal above records nothing.
 */
export async function reconcilePayment(
  services: Services,
  input: { paymentId: string; requestId: string },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<ReconcileResult> {
  const [payment] = await asAdmin(services.db, (tx) =>
    tx.select().from(cryptoPayments).where(eq(cryptoPayments.id, input.paymentId)),
  );
  if (payment === undefined) throw new AppError('not_found', `No payment ${input.paymentId}`);
  if (payment.providerPaymentId === null) {
    throw new AppError(
      'conflict',
      `Payment ${payment.id} has no provider payment id yet (no IPN has arrived): NOWPayments lists an invoice's payments only to a JWT login, so it cannot be read with the API key`,
      { paymentStatus: payment.status },
    );
  }
  // feature_disabled (503) when payments are off (PAYMENTS or the runtime flag) or have no API key.
  services.flags.require('payments');
  const provider = paymentProvider(services.config);
  let answer: StatusReport;
  try {
    answer = await provider.getPayment(payment.providerPaymentId);
  } catch (error) {
    if (!(error instanceof ProviderError)) throw error;
    if (error.kind === 'refused' && error.status === 404) {
      throw new AppError('not_found', `NOWPayments does not know payment ${payment.providerPaymentId}`, {
        paymentId: payment.id,
      });
    }
    services.log.warn(
      { paymentId: payment.id, kind: error.kind, providerStatus: error.status, reason: error.message },
      'payment not reconciled: the provider did not answer',
    );
    const message =
      error.kind === 'rate_limited'
        ? 'The payment provider is rate limiting our calls; try again later'
        : error.kind === 'unavailable'
          ? 'The payment provider is unavailable; try again later'
          : `The payment provider refused to read the payment (${error.status ?? 'unreadable answer'})`;
    throw new AppError('provider_unavailable', message, {
      ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
    });
  }
  const report = reportFor(payment, answer);
  if (report === undefined) {
    services.log.error(
      { paymentId: payment.id, providerPaymentId: payment.providerPaymentId, orderId: answer.orderId },
      'the provider reports the payment under another order: not applied',
    );
    throw new AppError(
      'conflict',
      `The provider's payment ${payment.providerPaymentId} belongs to another order; nothing was applied`,
    );
  }
  const outcome = await applyStatusReport(services, report, {
    requestId: input.requestId,
    onOutcome: (tx, applied) =>
      appendAudit(tx, {
        by,
        tenantId: payment.tenantId,
        action: 'payment.reconcile',
        target: payment.id,
        summary: {
          providerStatus: report.status.slice(0, 64),
          outcome: applied.status,
          reason: applied.reason ?? null,
          paymentStatus: { before: payment.status, after: applied.paymentStatus ?? payment.status },
        },
        // Money moved only when this report minted the pack.
        amountMicro: applied.minted === true ? payment.creditsMicro : undefined,
        at: new Date(services.clock.now()),
      }).then(() => undefined),
  });
  const [after] = await asAdmin(services.db, (tx) =>
    tx
      .select({ status: cryptoPayments.status })
      .from(cryptoPayments)
      .where(eq(cryptoPayments.id, payment.id)),
  );
  services.log.info(
    {
      paymentId: payment.id,
      requestId: input.requestId,
      providerStatus: report.status,
      outcome: outcome.status,
      reason: outcome.reason,
    },
    'payment reconciled by an admin',
  );
  return {
    ...outcome,
    paymentId: payment.id,
    paymentStatus: after?.status ?? payment.status,
    providerStatus: report.status,
  };
}
