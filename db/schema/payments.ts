import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, smallint, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** NOWPayments' payment statuses (DESIGN.md §4); ranks and transitions are in src/payments/status.ts. */
export const PAYMENT_STATUSES = [
  'waiting',
  'confirming',
  'partially_paid',
  'confirmed',
  'sending',
  'finished',
  'failed',
  'expired',
  'refunded',
] as const;
export type PaymentStatus = (typeof PAYMENT_STATUSES)[number];

/**
 * One invoice a tenant opened for a credit pack, and what the provider has said about it since.
 * Our id (`pay_…`) is the provider's `order_id`; the status only moves forward (src/payments),
 * and `minted_at` is set once, in the transaction of the `payment` entry in the book.
 */
export const cryptoPayments = pgTable(
  'crypto_payments',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id').notNull(),
    provider: text('provider').notNull().default('nowpayments'),
    /** The provider's invoice id (from invoice creation) and payment id (from the first IPN). */
    providerInvoiceId: text('provider_invoice_id'),
    providerPaymentId: text('provider_payment_id'),
    invoiceUrl: text('invoice_url'),
    pack: text('pack').notNull(),
    /** The pack's price as the provider was asked for it: a decimal string and a currency code. */
    priceAmount: text('price_amount').notNull(),
    priceCurrency: text('price_currency').notNull(),
    /** The credits the pack mints when the payment finishes. */
    creditsMicro: bigint('credits_micro', { mode: 'bigint' }).notNull(),
    status: text('status').$type<PaymentStatus>().notNull(),
    statusRank: smallint('status_rank').notNull(),
    /** What the payer actually sent, as the provider reports it (decimal string, pay currency). */
    actuallyPaid: text('actually_paid'),
    payCurrency: text('pay_currency'),
    /** The provider's `updated_at` (ms since the epoch) of the last IPN applied: older ones are ignored. */
    lastIpnUpdatedAt: bigint('last_ipn_updated_at', { mode: 'number' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
    /** Set once, with the `payment` entry (`mint_entry_id`) in the same transaction. */
    mintedAt: timestamp('minted_at', { withTimezone: true }),
    mintEntryId: bigint('mint_entry_id', { mode: 'bigint' }),
    /** When the engine's live balance was raised by the mint (null: the payment-credits job retries). */
    engineCreditedAt: timestamp('engine_credited_at', { withTimezone: true }),
    /** A refund after the mint: what the book took back, and what it could not (already spent). */
    refundedMicro: bigint('refunded_micro', { mode: 'bigint' }),
    refundShortfallMicro: bigint('refund_shortfall_micro', { mode: 'bigint' }),
    refundedAt: timestamp('refunded_at', { withTimezone: true }),
    /** When the engine's live balance was lowered by the refund (null while it is still owed). */
    engineDebitedAt: timestamp('engine_debited_at', { withTimezone: true }),
  },
  (table) => [
    index('crypto_payments_tenant_idx').on(table.tenantId, table.createdAt),
    uniqueIndex('crypto_payments_provider_invoice_key').on(table.provider, table.providerInvoiceId),
    // The reconciliation job's and admin.payments.stuck's scan: payments not yet at an end.
    index('crypto_payments_open_idx')
      .on(table.createdAt)
      .where(sql`${table.status} not in ('finished', 'failed', 'expired', 'refunded')`),
    // The payment-credits job's scan: mints and refunds the engine has not applied yet.
    index('crypto_payments_engine_owed_idx')
      .on(table.mintedAt)
      .where(
        sql`(${table.mintedAt} is not null and ${table.engineCreditedAt} is null) or (${table.refundedAt} is not null and ${table.engineDebitedAt} is null)`,
      ),
    check('crypto_payments_credits_positive', sql`${table.creditsMicro} > 0`),
    check(
      'crypto_payments_status_check',
      sql`${table.status} in ('waiting', 'confirming', 'partially_paid', 'confirmed', 'sending', 'finished', 'failed', 'expired', 'refunded')`,
    ),
  ],
);

/** What became of one IPN: applied, the same IPN again, or recorded and not applied (with a reason). */
export const WEBHOOK_OUTCOMES = ['processed', 'duplicate', 'ignored'] as const;
export type WebhookOutcome = (typeof WEBHOOK_OUTCOMES)[number];

/**
 * Every IPN received with a valid signature (forged or throttled ones cost no database work and
 * are not recorded). The first of each (provider, provider payment, status, updated_at) is
 * processed or ignored; every later copy is a `duplicate` row. No secret, signature or raw body.
 */
export const webhookEvents = pgTable(
  'webhook_events',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    provider: text('provider').notNull(),
    /** The provider's payment id (else its invoice id, else the order id): the dedup subject. */
    providerPaymentRef: text('provider_payment_ref').notNull(),
    /** Our payment, when the IPN names one we know. */
    paymentId: text('payment_id'),
    status: text('status').notNull(),
    /** The IPN's `updated_at` in ms (0 when it carries none). */
    ipnUpdatedAt: bigint('ipn_updated_at', { mode: 'number' }).notNull(),
    outcome: text('outcome').$type<WebhookOutcome>().notNull(),
    /** Why an IPN was ignored (`backward`, `after_terminal`, `stale`, `unknown_payment`, …). */
    reason: text('reason'),
    requestId: text('request_id'),
    receivedAt: timestamp('received_at', { withTimezone: true }).notNull(),
  },
  (table) => [
    // At most one non-duplicate row per IPN: the dedup key.
    uniqueIndex('webhook_events_first_key')
      .on(table.provider, table.providerPaymentRef, table.status, table.ipnUpdatedAt)
      .where(sql`${table.outcome} <> 'duplicate'`),
    index('webhook_events_payment_idx').on(table.paymentId, table.receivedAt),
    check('webhook_events_outcome_check', sql`${table.outcome} in ('processed', 'duplicate', 'ignored')`),
  ],
);

export type CryptoPaymentRow = typeof cryptoPayments.$inferSelect;
export type WebhookEventRow = typeof webhookEvents.$inferSelect;
