import * as v from 'valibot';
import { AppError } from '../errors.js';
import { ipnReport, ProviderId } from './ipn.js';
import type { StatusReport } from './state-machine.js';

/**
 * The NOWPayments REST API, the two calls the gateway makes (`x-api-key` auth): create an invoice
 * for a pack, and read a payment's status for reconciliation. Plain `fetch` (Node and Workers);
 * every failure is a `ProviderError` whose `kind` says what the caller may do about it.
 */
export interface NowPaymentsClient {
  createInvoice(input: InvoiceRequest): Promise<{ invoiceId: string; invoiceUrl: string }>;
  /** The payment's status as a report for the state machine (the same path as an IPN). */
  getPayment(providerPaymentId: string): Promise<StatusReport>;
}

export interface InvoiceRequest {
  /** Our payment id: the provider echoes it as `order_id` in every IPN. */
  orderId: string;
  priceAmount: string;
  priceCurrency: string;
  description: string;
  /** Where the provider posts IPNs for this invoice (NOWPAYMENTS_IPN_URL), if configured. */
  ipnCallbackUrl?: string | undefined;
}

/**
 * `rate_limited`: 429 (back off, `retryAfterMs` when the provider said); `unavailable`: 5xx, a
 * timeout or no connection (try again next cycle; never a reason to fail a payment); `refused`: any
 * other 4xx or an answer we cannot read (our request or our key is wrong).
 */
export class ProviderError extends Error {
  constructor(
    readonly kind: 'rate_limited' | 'unavailable' | 'refused',
    message: string,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'ProviderError';
  }
}

// 10 s: the provider answers in well under a second; a caller (createInvoice, a job) must not hang.
export const PROVIDER_TIMEOUT_MS = 10_000;

const InvoiceResponse = v.looseObject({
  id: v.pipe(ProviderId, v.minLength(1)),
  invoice_url: v.pipe(v.string(), v.url()),
});

/**
 * Frees an error answer's connection without waiting for it: nothing depends on the cancel
 * settling, and a cancel can stay pending forever (msw's mocked bodies do, mswjs/interceptors#799).
 */
function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

export function nowPaymentsClient(options: {
  apiUrl: string;
  apiKey: string;
  /** How long one call may take (default PROVIDER_TIMEOUT_MS). */
  timeoutMs?: number;
}): NowPaymentsClient {
  const base = options.apiUrl.replace(/\/+$/, '');
  const call = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> => {
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        method,
        headers: {
          'x-api-key': options.apiKey,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(options.timeoutMs ?? PROVIDER_TIMEOUT_MS),
      });
    } catch (error) {
      throw new ProviderError('unavailable', `NOWPayments unreachable: ${(error as Error).name}`);
    }
    if (response.status === 429) {
      const seconds = Number(response.headers.get('retry-after'));
      discard(response);
      throw new ProviderError(
        'rate_limited',
        'NOWPayments rate limit',
        429,
        Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : undefined,
      );
    }
    if (response.status >= 500) {
      discard(response);
      throw new ProviderError('unavailable', `NOWPayments answered ${response.status}`, response.status);
    }
    if (!response.ok) {
      discard(response);
      throw new ProviderError(
        'refused',
        `NOWPayments refused the request (${response.status})`,
        response.status,
      );
    }
    try {
      return await response.json();
    } catch {
      throw new ProviderError('refused', 'NOWPayments answered something that is not JSON', response.status);
    }
  };

  return {
    async createInvoice(input) {
      const answer = v.safeParse(
        InvoiceResponse,
        await call('POST', '/invoice', {
          price_amount: Number(input.priceAmount),
          price_currency: input.priceCurrency,
          order_id: input.orderId,
          order_description: input.description,
          ...(input.ipnCallbackUrl === undefined ? {} : { ipn_callback_url: input.ipnCallbackUrl }),
        }),
      );
      if (!answer.success)
        throw new ProviderError('refused', 'NOWPayments invoice answer without id or invoice_url');
      return { invoiceId: answer.output.id, invoiceUrl: answer.output.invoice_url };
    },
    async getPayment(providerPaymentId) {
      // The API answers with the IPN's members (updated_at as an ISO date): one parser for both.
      const parsed = ipnReport(await call('GET', `/payment/${encodeURIComponent(providerPaymentId)}`));
      if ('error' in parsed)
        throw new ProviderError('refused', `NOWPayments payment answer: ${parsed.error}`);
      return parsed.report;
    },
  };
}

/** The provider client the configuration names; 503 `feature_disabled` when payments are off or have no API key. */
export function paymentProvider(config: {
  payments: 'on' | 'off';
  nowpaymentsApiKey?: string;
  nowpaymentsApiUrl: string;
  nowpaymentsTimeoutMs?: number;
}): NowPaymentsClient {
  if (config.payments === 'off') throw new AppError('feature_disabled', 'Payments are switched off');
  if (config.nowpaymentsApiKey === undefined) {
    throw new AppError('feature_disabled', 'Payments are not configured (NOWPAYMENTS_API_KEY)');
  }
  return nowPaymentsClient({
    apiUrl: config.nowpaymentsApiUrl,
    apiKey: config.nowpaymentsApiKey,
    ...(config.nowpaymentsTimeoutMs === undefined ? {} : { timeoutMs: config.nowpaymentsTimeoutMs }),
  });
}
