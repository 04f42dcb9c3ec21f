import { Hono } from 'hono';
import { AppError } from '../errors.js';
import { decisionHeaders, rateLimitedError } from '../limits/preauth.js';
import { ipnReport, shallowEnough, throttleSubject } from '../payments/ipn.js';
import { verifyIpnSignature } from '../payments/signature.js';
import { applyStatusReport } from '../payments/state-machine.js';
import type { Services } from '../services.js';
import { type AppEnv, errorResponse } from './context.js';

/**
 * POST /api/crypto/webhook — NOWPayments IPNs (DESIGN.md §4). In order, each step before any work
 * of the next: the per-IP pre-auth limit (app.ts); payments switched off (PAYMENTS=off or the
 * global `payments` flag) → 503 (the provider retries later); the body parsed from its raw text; the per-payment throttle (10/hour, before any HMAC);
 * the signature (401 when missing or wrong — no database work); then the state machine in one
 * transaction. 200 `{ status: processed | duplicate | ignored }`; a fault is a 5xx, so the
 * provider sends the IPN again.
 */
export function cryptoWebhookRoute(services: Services): Hono<AppEnv> {
  return new Hono<AppEnv>().post('/api/crypto/webhook', async (c) => {
    const { config } = services;
    // The global flag only: a tenant's own flag stops its new invoices, not payments already made.
    services.flags.require('payments');
    if (config.nowpaymentsIpnSecrets.length === 0) {
      throw new AppError('feature_disabled', 'Payments are not configured (NOWPAYMENTS_IPN_SECRET)');
    }
    const raw = await c.req.text();
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      throw new AppError('invalid_request', 'Invalid request: invalid JSON');
    }
    if (!shallowEnough(body)) throw new AppError('invalid_request', 'Invalid IPN: nested too deeply');
    const subject = throttleSubject(body);
    if (subject === undefined) {
      throw new AppError(
        'invalid_request',
        'An IPN must name its payment (order_id, invoice_id or payment_id)',
      );
    }
    const decision = await services.paymentThrottle.check(subject, 'crypto-webhook');
    if (!decision.allowed) {
      for (const [name, value] of Object.entries(decisionHeaders(decision))) c.header(name, value);
      return errorResponse(
        c,
        rateLimitedError(decision, 'Too many notifications for this payment', 'payment'),
      );
    }
    if (!verifyIpnSignature(config.nowpaymentsIpnSecrets, body, c.req.header('x-nowpayments-sig'))) {
      throw new AppError('unauthorized', 'Missing or invalid x-nowpayments-sig');
    }
    const parsed = ipnReport(body);
    if ('error' in parsed) throw new AppError('invalid_request', `Invalid IPN: ${parsed.error}`);
    const outcome = await applyStatusReport(services, parsed.report, { requestId: c.get('requestId') });
    c.get('log').info(
      {
        paymentId: outcome.paymentId,
        status: parsed.report.status,
        outcome: outcome.status,
        reason: outcome.reason,
      },
      'payment notification',
    );
    return c.json({ status: outcome.status });
  });
}
