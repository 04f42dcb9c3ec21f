import { desc, eq } from 'drizzle-orm';
import { type CryptoPaymentRow, cryptoPayments } from '../../db/schema/index.js';
import { asAdmin, asTenant } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { ProviderError, paymentProvider } from './nowpayments.js';
import { findPack } from './packs.js';
import { PROVIDER } from './state-machine.js';
import type { PaymentStatus } from './status.js';
import { statusRank } from './status.js';

/** A pack as `billing.packs` lists it: money as decimal strings. */
export interface PackView {
  name: string;
  priceAmount: string;
  priceCurrency: string;
  creditsMicro: string;
}

export function listPacks(services: Services): PackView[] {
  return Object.values(services.config.packs).map((pack) => ({
    name: pack.name,
    priceAmount: pack.priceAmount,
    priceCurrency: pack.priceCurrency,
    creditsMicro: pack.creditsMicro.toString(),
  }));
}

/**
 * Opens an invoice for a pack. Our row is written first (`waiting`), so every IPN names an order
 * we know; then the provider creates the invoice with our payment id as its `order_id`. A refusal
 * (4xx) or a 429 created nothing at the provider: the row goes. A timeout, lost connection, 5xx
 * or unreadable answer may follow a created invoice: the row stays (reconciliation and
 * admin.payments.stuck see it) and its id is in the error. Each answers 503 `provider_unavailable`.
 * Payments switched off (PAYMENTS=off, the `payments` flag, globally or for this tenant): 503
 * `feature_disabled`.
 * The row is audited (`invoice.create`) as it is written, its removal as `invoice.discard`.
 */
export async function createInvoice(
  services: Services,
  input: { tenantId: string; pack: string; requestedBy: string },
  by: AuditActor = SYSTEM_ACTOR,
): Promise<{ paymentId: string; invoiceUrl: string }> {
  const { config } = services;
  // feature_disabled before anything is written or looked up.
  services.flags.require('payments', input.tenantId);
  const provider = paymentProvider(config);
  const pack = findPack(config.packs, input.pack);
  const { tenantId } = input;
  await getTenant(services, tenantId);

  const paymentId = newId('pay');
  const now = new Date(services.clock.now());
  const audit = (action: 'invoice.create' | 'invoice.discard') => ({
    by,
    tenantId,
    action,
    target: paymentId,
    summary: { pack: pack.name, priceAmount: pack.priceAmount, priceCurrency: pack.priceCurrency },
    at: new Date(services.clock.now()),
  });
  await asTenant(services.db, tenantId, async (tx) => {
    await tx.insert(cryptoPayments).values({
      id: paymentId,
      tenantId,
      provider: PROVIDER,
      pack: pack.name,
      priceAmount: pack.priceAmount,
      priceCurrency: pack.priceCurrency,
      creditsMicro: pack.creditsMicro,
      status: 'waiting',
      statusRank: statusRank('waiting'),
      createdAt: now,
      updatedAt: now,
    });
    await appendAudit(tx, audit('invoice.create'));
  });
  const context = { paymentId, tenantId, pack: pack.name, requestedBy: input.requestedBy };

  let invoice: { invoiceId: string; invoiceUrl: string };
  try {
    invoice = await provider.createInvoice({
      orderId: paymentId,
      priceAmount: pack.priceAmount,
      priceCurrency: pack.priceCurrency,
      description: `spicegate ${pack.name} pack: ${pack.creditsMicro} micro-credits`,
      ipnCallbackUrl: config.nowpaymentsIpnUrl,
    });
  } catch (error) {
    if (!(error instanceof ProviderError)) throw error;
    const logged = { ...context, kind: error.kind, providerStatus: error.status, reason: error.message };
    // A 4xx (429 included) was answered before anything was created: the row would name nothing.
    // A 5xx, a timeout or an answer we cannot read may follow a created invoice: the row stays.
    const createdNothing = error.status !== undefined && error.status >= 400 && error.status < 500;
    if (createdNothing) {
      // The gateway takes back the row it wrote: the tenant role may not delete payments.
      await asAdmin(services.db, async (tx) => {
        await tx.delete(cryptoPayments).where(eq(cryptoPayments.id, paymentId));
        await appendAudit(tx, audit('invoice.discard'));
      });
    }
    const kept = createdNothing ? {} : { paymentId };
    if (error.kind === 'rate_limited') {
      services.log.warn(logged, 'invoice not created: the payment provider is rate limiting us');
      throw new AppError('provider_unavailable', 'The payment provider is busy; try again later', {
        ...kept,
        ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
      });
    }
    if (error.kind === 'refused') {
      services.log.error(
        logged,
        'the payment provider refused the invoice: check NOWPAYMENTS_API_KEY and NOWPAYMENTS_API_URL',
      );
      throw new AppError(
        'provider_unavailable',
        createdNothing
          ? 'The payment provider refused to create the invoice; no payment was opened. Try again later'
          : 'The payment provider gave an answer the gateway cannot read; try again later',
        kept,
      );
    }
    services.log.warn(logged, 'invoice not created: the payment provider did not answer (the row is kept)');
    throw new AppError('provider_unavailable', 'The payment provider is unavailable; try again later', kept);
  }

  // Only the provider's references: an IPN racing this update may already have moved the status.
  await asTenant(services.db, tenantId, (tx) =>
    tx
      .update(cryptoPayments)
      .set({ providerInvoiceId: invoice.invoiceId, invoiceUrl: invoice.invoiceUrl })
      .where(eq(cryptoPayments.id, paymentId)),
  );
  services.log.info({ ...context, providerInvoiceId: invoice.invoiceId }, 'invoice created');
  return { paymentId, invoiceUrl: invoice.invoiceUrl };
}

/** A payment as `billing.payments` lists it: money as decimal strings, times as ISO 8601. */
export interface PaymentView {
  paymentId: string;
  pack: string;
  priceAmount: string;
  priceCurrency: string;
  creditsMicro: string;
  status: PaymentStatus;
  actuallyPaid: string | null;
  payCurrency: string | null;
  invoiceUrl: string | null;
  createdAt: string;
  updatedAt: string;
  mintedAt: string | null;
  refundedMicro: string | null;
  refundShortfallMicro: string | null;
}

/** 100: a tenant buys a pack now and then; a page of the newest covers any real history. */
export const PAYMENTS_LISTED = 100;

/** The tenant's newest payments first (at most `PAYMENTS_LISTED`). */
export async function listPayments(services: Services, tenantId: string): Promise<PaymentView[]> {
  await getTenant(services, tenantId);
  const rows = await asTenant(services.db, tenantId, (tx) =>
    tx
      .select()
      .from(cryptoPayments)
      .where(eq(cryptoPayments.tenantId, tenantId))
      .orderBy(desc(cryptoPayments.createdAt), desc(cryptoPayments.id))
      .limit(PAYMENTS_LISTED),
  );
  return rows.map(paymentView);
}

/** A payment as its tenant sees it: money as decimal strings, times as ISO 8601. */
export function paymentView(row: CryptoPaymentRow): PaymentView {
  return {
    paymentId: row.id,
    pack: row.pack,
    priceAmount: row.priceAmount,
    priceCurrency: row.priceCurrency,
    creditsMicro: row.creditsMicro.toString(),
    status: row.status,
    actuallyPaid: row.actuallyPaid,
    payCurrency: row.payCurrency,
    invoiceUrl: row.invoiceUrl,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    mintedAt: row.mintedAt?.toISOString() ?? null,
    refundedMicro: row.refundedMicro?.toString() ?? null,
    refundShortfallMicro: row.refundShortfallMicro?.toString() ?? null,
  };
}
