import { and, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  type CryptoPaymentRow,
  creditGrants,
  cryptoPayments,
  postings,
  tenants,
  type WebhookOutcome,
  webhookEvents,
} from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { accounts, appendEntry, paymentPostings } from '../ledger/journal.js';
import type { Services } from '../services.js';
import { applyEngineChanges } from './engine.js';
import { isPaymentStatus, type PaymentStatus, statusRank, transition } from './status.js';

/** The provider whose reports this machine applies (the only one so far). */
export const PROVIDER = 'nowpayments';

/**
 * A status the provider reported for a payment: from an IPN (src/http/crypto-webhook.ts), the
 * reconciliation job or an admin's reconcile call — all go through `applyStatusReport`.
 */
export interface StatusReport {
  /** Our payment id, sent as the invoice's `order_id`; matched first. */
  orderId?: string | undefined;
  /** The provider's invoice id; matched when the order id is absent or unknown. */
  invoiceId?: string | undefined;
  /** The provider's payment id (an invoice may see several payment attempts). */
  providerPaymentId?: string | undefined;
  /** The provider's status text, as sent (an unknown one is recorded and ignored). */
  status: string;
  /** The provider's `updated_at` in ms since the epoch; 0 when the report has none. */
  updatedAtMs: number;
  actuallyPaid?: string | undefined;
  payCurrency?: string | undefined;
}

export interface ApplyOptions {
  /** The request (webhook, tRPC call) or job run the report came with, kept on its event. */
  requestId?: string;
  /** Test seam: runs inside the transaction after the status change and any ledger entry. */
  beforeCommit?: (tx: Db) => Promise<void>;
  /** Runs last inside the transaction whatever the outcome (an admin's reconcile records it there). */
  onOutcome?: (tx: Db, outcome: ApplyOutcome) => Promise<void>;
}

export type ApplyOutcome = {
  status: WebhookOutcome;
  /** Our payment, when the report named one we know. */
  paymentId?: string;
  /** Why a report was ignored (see `Refusal` in status.ts, plus `unknown_payment`, `unknown_status`). */
  reason?: string;
  /** The payment's status after this report. */
  paymentStatus?: PaymentStatus;
  /** True when this report minted the pack's credits (once per payment). */
  minted?: boolean;
};

/**
 * Applies one provider report to our payment (DESIGN.md §4), in one transaction under
 * `SELECT … FOR UPDATE` on the payment row, so reports of one payment apply one at a time:
 *
 * 1. the webhook event: the first report of a (provider payment, status, updated_at) is processed
 *    or ignored, every later copy recorded as a `duplicate`;
 * 2. the status moves only as `transition` allows (forward, newer, nothing after an end);
 * 3. `finished` mints once: the `credit_grants` row and the `payment` entry in the book, guarded by
 *    `minted_at IS NULL` and the entry's unique reference; `refunded` after a mint writes the
 *    compensating `refund` entry (at most what the book still holds available: the rest is the
 *    recorded shortfall);
 *
 * then, after the commit, the engine's live balance follows (src/payments/engine.ts): a store that
 * is down then loses nothing — the payment-credits job, hydration or conservation apply it later,
 * once, by the same grant id.
 */
export async function applyStatusReport(
  services: Services,
  report: StatusReport,
  options: ApplyOptions = {},
): Promise<ApplyOutcome> {
  const receivedAt = new Date(services.clock.now());
  const ref = report.providerPaymentId ?? report.invoiceId ?? report.orderId ?? 'unknown';
  const event = (paymentId: string | undefined, outcome: WebhookOutcome, reason?: string) => ({
    provider: PROVIDER,
    providerPaymentRef: ref,
    paymentId: paymentId ?? null,
    status: report.status.slice(0, 64),
    ipnUpdatedAt: report.updatedAtMs,
    outcome,
    reason: reason ?? null,
    requestId: options.requestId ?? null,
    receivedAt,
  });

  const engineCommittedMicro =
    report.status === 'refunded' ? await engineCommitted(services, report) : undefined;
  const applyReport = async (tx: Db) => {
    const payment = await lockPayment(tx, report);
    // The first copy of this report takes the dedup key; a copy whose twin committed first (or is
    // committing: the unique index waits for it) is a duplicate.
    const recordFirst = async (outcome: WebhookOutcome, reason?: string): Promise<boolean> => {
      const inserted = await tx
        .insert(webhookEvents)
        .values(event(payment?.id, outcome, reason))
        .onConflictDoNothing({
          target: [
            webhookEvents.provider,
            webhookEvents.providerPaymentRef,
            webhookEvents.status,
            webhookEvents.ipnUpdatedAt,
          ],
          where: sql`${webhookEvents.outcome} <> 'duplicate'`,
        })
        .returning({ id: webhookEvents.id });
      if (inserted.length > 0) return true;
      await tx.insert(webhookEvents).values(event(payment?.id, 'duplicate'));
      return false;
    };

    if (payment === undefined) {
      if (!(await recordFirst('ignored', 'unknown_payment'))) return { status: 'duplicate' } as const;
      return { status: 'ignored', reason: 'unknown_payment' } as const;
    }
    const base = { paymentId: payment.id };
    if (!isPaymentStatus(report.status)) {
      if (!(await recordFirst('ignored', 'unknown_status'))) {
        return { ...base, status: 'duplicate', paymentStatus: payment.status } as const;
      }
      return { ...base, status: 'ignored', reason: 'unknown_status', paymentStatus: payment.status } as const;
    }
    const next = report.status;
    const decision = transition(payment.status, payment.lastIpnUpdatedAt, next, report.updatedAtMs);
    if (!decision.apply) {
      if (!(await recordFirst('ignored', decision.reason))) {
        return { ...base, status: 'duplicate', paymentStatus: payment.status } as const;
      }
      if (next === 'finished' && (payment.status === 'failed' || payment.status === 'expired')) {
        // The payer's money arrived for a payment we had closed: nothing mints by itself
        // (admin.payments.stuck lists it); an operator settles it, e.g. with a grant.
        services.log.error(
          { paymentId: payment.id, tenantId: payment.tenantId, status: payment.status },
          'payment finished after it had ended: not minted, settle it by hand',
        );
      }
      return { ...base, status: 'ignored', reason: decision.reason, paymentStatus: payment.status } as const;
    }
    if (!(await recordFirst('processed'))) {
      return { ...base, status: 'duplicate', paymentStatus: payment.status } as const;
    }

    await tx
      .update(cryptoPayments)
      .set({
        status: next,
        statusRank: statusRank(next),
        lastIpnUpdatedAt: Math.max(report.updatedAtMs, payment.lastIpnUpdatedAt ?? 0),
        updatedAt: receivedAt,
        ...(report.providerPaymentId === undefined ? {} : { providerPaymentId: report.providerPaymentId }),
        ...(report.invoiceId === undefined || payment.providerInvoiceId !== null
          ? {}
          : { providerInvoiceId: report.invoiceId }),
        ...(report.actuallyPaid === undefined ? {} : { actuallyPaid: report.actuallyPaid }),
        ...(report.payCurrency === undefined ? {} : { payCurrency: report.payCurrency }),
      })
      .where(eq(cryptoPayments.id, payment.id));

    let minted = false;
    let shortfall = 0n;
    if (next === 'finished' && payment.mintedAt === null) {
      await mint(tx, payment, receivedAt);
      minted = true;
    }
    if (next === 'refunded' && payment.mintedAt !== null && payment.refundedAt === null) {
      shortfall = await refund(services, tx, payment, receivedAt, engineCommittedMicro);
    }
    if (next === 'partially_paid') {
      services.log.warn(
        { paymentId: payment.id, tenantId: payment.tenantId, actuallyPaid: report.actuallyPaid },
        'payment partially paid: nothing minted (admin.payments.stuck lists it)',
      );
    }
    await options.beforeCommit?.(tx);
    return { ...base, status: 'processed', paymentStatus: next, minted, shortfall } as const;
  };
  // A report names its payment, not its tenant: the provider's reports are platform work.
  const result = await asAdmin(services.db, async (tx) => {
    const outcome = await applyReport(tx);
    await options.onOutcome?.(tx, outcome);
    return outcome;
  });

  services.metrics.paymentReports.inc({ outcome: result.status });
  if (result.status !== 'processed') return result;
  const { shortfall, ...outcome } = result;
  if (shortfall > 0n) services.metrics.refundShortfallMicro.inc(Number(shortfall));
  await applyEngineChanges(services, outcome.paymentId);
  return outcome;
}

/**
 * Before a refund: every charge the engine has settled for the tenant (committed), those still on
 * their way to the book included (this process's held rows are written first). Only charges are
 * taken from the engine; what was credited is the book's. Undefined when the store cannot say
 * (down, or the balance absent): the book alone decides.
 */
async function engineCommitted(services: Services, report: StatusReport): Promise<bigint | undefined> {
  await services.spend
    .flush()
    .catch((error: unknown) => services.log.warn({ err: error }, 'spend rows not written before a refund'));
  try {
    const [payment] = await asAdmin(services.db, (tx) =>
      tx
        .select({ tenantId: cryptoPayments.tenantId })
        .from(cryptoPayments)
        .where(
          report.orderId !== undefined
            ? eq(cryptoPayments.id, report.orderId)
            : eq(cryptoPayments.providerInvoiceId, report.invoiceId ?? ''),
        ),
    );
    if (payment === undefined) return undefined;
    const snapshot = await services.store.snapshot(payment.tenantId);
    return snapshot.present ? snapshot.committedMicro : undefined;
  } catch (error) {
    services.log.warn({ err: error }, 'store not read before a refund: the book alone decides');
    return undefined;
  }
}

/** The payment a report names, locked for this transaction: by order id, then by invoice id. */
async function lockPayment(tx: Db, report: StatusReport): Promise<CryptoPaymentRow | undefined> {
  const byOrder = report.orderId === undefined ? undefined : eq(cryptoPayments.id, report.orderId);
  const byInvoice =
    report.invoiceId === undefined
      ? undefined
      : and(eq(cryptoPayments.provider, PROVIDER), eq(cryptoPayments.providerInvoiceId, report.invoiceId));
  if (byOrder !== undefined) {
    const [row] = await tx.select().from(cryptoPayments).where(byOrder).for('update');
    if (row !== undefined) return row;
  }
  if (byInvoice === undefined) return undefined;
  const [row] = await tx.select().from(cryptoPayments).where(byInvoice).for('update');
  return row;
}

/**
 * The mint: the grant row (what the store's balance is rebuilt from; its id is the payment id, the
 * store's grant id) and the `payment` entry, then `minted_at` — all or nothing, once.
 */
async function mint(tx: Db, payment: CryptoPaymentRow, at: Date): Promise<void> {
  const { id, tenantId, creditsMicro } = payment;
  const [grant] = await tx
    .insert(creditGrants)
    .values({
      id,
      tenantId,
      amountMicro: creditsMicro,
      reason: `payment ${id} (${payment.pack})`,
      grantedBy: PROVIDER,
      createdAt: at,
    })
    .onConflictDoNothing({ target: creditGrants.id })
    .returning({ id: creditGrants.id });
  const entry = await appendEntry(tx, {
    tenantId,
    kind: 'payment',
    reference: id,
    postings: paymentPostings(tenantId, creditsMicro),
    createdAt: at,
  });
  // minted_at is null under the row lock, so neither can exist: a fault, not a replay.
  if (grant === undefined || !entry.created) throw new Error(`payment ${id} minted before without minted_at`);
  const updated = await tx
    .update(cryptoPayments)
    .set({ mintedAt: at, mintEntryId: entry.entryId })
    .where(and(eq(cryptoPayments.id, id), isNull(cryptoPayments.mintedAt)))
    .returning({ id: cryptoPayments.id });
  if (updated.length !== 1) throw new Error(`payment ${id} minted concurrently`);
}

/**
 * A refund after the mint (docs/payments.md "Refunds"): the book takes back the minted credits, but
 * never more than the tenant has not spent — the book's available balance, less the charges the
 * engine settled that are still on their way to the book — so a refund never
 * takes a balance below zero; what was already spent is recorded as the shortfall and logged for
 * the operator. The engine's balance is lowered by what the book took back.
 */
async function refund(
  services: Services,
  tx: Db,
  payment: CryptoPaymentRow,
  at: Date,
  engineCommittedMicro: bigint | undefined,
): Promise<bigint> {
  const { id, tenantId, creditsMicro } = payment;
  // Refunds of one tenant's payments take from one balance: one at a time.
  await tx.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, tenantId)).for('update');
  const sum = (account: string) =>
    sql<string>`(select coalesce(sum(${postings.amountMicro}), 0) from ${postings} where ${postings.account} = ${account})::text`;
  const [row] = await tx
    .select({ available: sum(accounts.available(tenantId)), spent: sum(accounts.spent(tenantId)) })
    .from(tenants)
    .where(eq(tenants.id, tenantId));
  const bookSpent = BigInt(row?.spent ?? '0');
  // Charges the engine settled that the book does not hold yet (another gateway's outbox).
  const unbooked =
    engineCommittedMicro !== undefined && engineCommittedMicro > bookSpent
      ? engineCommittedMicro - bookSpent
      : 0n;
  const available = BigInt(row?.available ?? '0') - unbooked;
  const takenBack = available <= 0n ? 0n : available < creditsMicro ? available : creditsMicro;
  const shortfall = creditsMicro - takenBack;
  if (takenBack > 0n) {
    await appendEntry(tx, {
      tenantId,
      kind: 'refund',
      reference: id,
      postings: paymentPostings(tenantId, -takenBack),
      createdAt: at,
    });
  }
  await tx
    .update(cryptoPayments)
    .set({
      refundedMicro: takenBack,
      refundShortfallMicro: shortfall,
      refundedAt: at,
      // Nothing for the engine to lower when the book took nothing back.
      ...(takenBack === 0n ? { engineDebitedAt: at } : {}),
    })
    .where(and(eq(cryptoPayments.id, id), isNull(cryptoPayments.refundedAt)));
  const fields = {
    paymentId: id,
    tenantId,
    refundedMicro: takenBack.toString(),
    shortfallMicro: shortfall.toString(),
  };
  if (shortfall > 0n) {
    services.log.warn(fields, 'payment refunded after its credits were spent: shortfall recorded');
  } else services.log.info(fields, 'payment refunded');
  return shortfall;
}
