import { createHmac } from 'node:crypto';
import { type CryptoPaymentRow, cryptoPayments, type PaymentStatus } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { newId } from '../../src/ids.js';
import { DEFAULT_PACKS } from '../../src/payments/packs.js';
import { statusRank } from '../../src/payments/status.js';
import type { Services } from '../../src/services.js';
import type { Harness } from './harness.js';

/** A payment row as createInvoice leaves it (status waiting), written directly. */
export async function insertPayment(
  services: Pick<Services, 'db' | 'clock'>,
  input: {
    tenantId: string;
    pack?: keyof typeof DEFAULT_PACKS;
    status?: PaymentStatus;
    createdAt?: Date;
    providerPaymentId?: string;
    providerInvoiceId?: string;
  },
): Promise<CryptoPaymentRow> {
  const pack = DEFAULT_PACKS[input.pack ?? 'standard'];
  if (pack === undefined) throw new Error(`no pack ${input.pack}`);
  const at = input.createdAt ?? new Date(services.clock.now());
  const status = input.status ?? 'waiting';
  const [row] = await asAdmin(services.db, (tx) =>
    tx
      .insert(cryptoPayments)
      .values({
        id: newId('pay'),
        tenantId: input.tenantId,
        pack: pack.name,
        priceAmount: pack.priceAmount,
        priceCurrency: pack.priceCurrency,
        creditsMicro: pack.creditsMicro,
        status,
        statusRank: statusRank(status),
        providerInvoiceId: input.providerInvoiceId ?? String(Math.floor(Math.random() * 1e12)),
        ...(input.providerPaymentId === undefined ? {} : { providerPaymentId: input.providerPaymentId }),
        createdAt: at,
        updatedAt: at,
      })
      .returning(),
  );
  if (row === undefined) throw new Error('payment not inserted');
  return row;
}

/**
 * NOWPayments' signature computed here, independently of src/payments/signature.ts: keys sorted
 * recursively by a replacer, then hex HMAC-SHA512.
 */
export function signBody(secret: string, body: Record<string, unknown>): string {
  const sorted = JSON.stringify(body, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(
          Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)),
        )
      : value,
  );
  return createHmac('sha512', secret).update(sorted).digest('hex');
}

/** An IPN body as NOWPayments sends it for our payment. */
export function ipnBody(
  payment: Pick<CryptoPaymentRow, 'id' | 'providerInvoiceId'> & { providerPaymentId?: string | null },
  status: string,
  updatedAtMs: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    // The provider's payment id: the row's, else one derived from its invoice (unique per payment).
    payment_id: Number(payment.providerPaymentId ?? `9${payment.providerInvoiceId}`),
    invoice_id: Number(payment.providerInvoiceId),
    payment_status: status,
    pay_address: '0x0000000000000000000000000000000000000001',
    price_amount: 10,
    price_currency: 'usd',
    pay_amount: 0.0042,
    actually_paid: status === 'waiting' ? 0 : 0.0042,
    pay_currency: 'eth',
    order_id: payment.id,
    order_description: 'spicegate standard pack',
    purchase_id: '6084744717',
    created_at: updatedAtMs - 60_000,
    updated_at: updatedAtMs,
    outcome_amount: 0.0041,
    outcome_currency: 'eth',
    fee: { currency: 'eth', depositFee: 0, withdrawalFee: 0.0001, serviceFee: 0 },
    ...extra,
  };
}

/** POSTs an IPN: signed with `secret` unless a signature (or none) is given. */
export function postIpn(
  harness: Pick<Harness, 'request'>,
  body: Record<string, unknown> | string,
  signature: string | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return harness.request('/api/crypto/webhook', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(signature === undefined ? {} : { 'x-nowpayments-sig': signature }),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
