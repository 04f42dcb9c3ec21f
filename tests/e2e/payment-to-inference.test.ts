import { HttpResponse, http } from 'msw';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork } from '../support/msw.js';
import { signBody } from '../support/payments.js';
import { serve } from '../support/serve.js';
import { events } from '../support/sse.js';

/**
 * Issue 15 end to end over HTTP (a real socket; msw stands in for NOWPayments only): a member buys
 * the standard pack, the provider's signed `finished` IPN mints 10,500,000 µ, an inference spends
 * exactly its cost_micro, and the conservation check finds the store and the book in agreement.
 */
const SECRET = 'ipn-secret-e2e-0123456789abc';
const API = 'https://api.nowpayments.test/v1';

describe('invoice → signed IPN → credits → inference', () => {
  let harness: Harness;
  let server: { url: string; close(): Promise<void> };
  const invoices: Record<string, unknown>[] = [];
  const network = mockNetwork(
    http.post(`${API}/invoice`, async ({ request }) => {
      const body = (await request.json()) as Record<string, unknown>;
      invoices.push({ ...body, apiKey: request.headers.get('x-api-key') });
      return HttpResponse.json({
        id: '5524761237',
        order_id: body.order_id,
        invoice_url: 'https://nowpayments.test/payment/?iid=5524761237',
      });
    }),
  );

  beforeAll(async () => {
    harness = await createHarness({
      config: {
        nowpaymentsIpnSecrets: [SECRET],
        nowpaymentsApiKey: 'np-api-key-e2e',
        nowpaymentsApiUrl: API,
        nowpaymentsIpnUrl: 'https://gateway.example/api/crypto/webhook',
      },
    });
    server = await serve(harness.app);
  });
  afterAll(async () => {
    network.close();
    await server.close();
    await harness.close();
  });

  const call = async (token: string, path: string, input: unknown, method: 'GET' | 'POST') => {
    const query = method === 'GET' ? `?input=${encodeURIComponent(JSON.stringify(input))}` : '';
    const response = await fetch(`${server.url}/trpc/${path}${query}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(method === 'POST' ? { body: JSON.stringify(input) } : {}),
    });
    const body = (await response.json()) as { result?: { data: unknown }; error?: unknown };
    if (body.result === undefined)
      throw new Error(`${path}: ${response.status} ${JSON.stringify(body.error)}`);
    return body.result.data as Record<string, string>;
  };

  it('mints the pack once and an inference then spends exactly its cost_micro; no drift', async () => {
    const tenantId = (await createTenant(harness.services, { name: 'Buyer', tier: 4 })).id;
    const member = (
      await issueCallerToken(harness.services, {
        role: 'member',
        subject: 'buyer',
        tenantId,
        ttlSeconds: 600,
      })
    ).token;

    const invoice = await call(member, 'billing.createInvoice', { pack: 'standard' }, 'POST');
    expect(invoice).toEqual({
      paymentId: expect.stringMatching(/^pay_/),
      invoiceUrl: 'https://nowpayments.test/payment/?iid=5524761237',
    });
    expect(invoices).toEqual([
      expect.objectContaining({
        order_id: invoice.paymentId,
        price_amount: 10,
        price_currency: 'usd',
        ipn_callback_url: 'https://gateway.example/api/crypto/webhook',
        apiKey: 'np-api-key-e2e',
      }),
    ]);

    const ipn = {
      payment_id: 6_021_773_114,
      invoice_id: 5_524_761_237,
      payment_status: 'finished',
      order_id: invoice.paymentId,
      price_amount: 10,
      price_currency: 'usd',
      actually_paid: 0.0042,
      pay_currency: 'eth',
      updated_at: Date.now(),
      fee: { currency: 'eth', depositFee: 0, withdrawalFee: 0, serviceFee: 0 },
    };
    const notified = await fetch(`${server.url}/api/crypto/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-nowpayments-sig': signBody(SECRET, ipn) },
      body: JSON.stringify(ipn),
    });
    expect([notified.status, await notified.json()]).toEqual([200, { status: 'processed' }]);

    const funded = await call(member, 'billing.balance', {}, 'GET');
    expect(funded.availableMicro).toBe('10500000');

    const key = await call(member, 'keys.create', { name: 'e2e' }, 'POST');
    const inference = await fetch(`${server.url}/api/v1/inference`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'what does a credit buy?', max_tokens: 12 }),
    });
    expect(inference.status).toBe(200);
    const done = events(await inference.text()).at(-1);
    expect(done?.type).toBe('done');
    const cost = BigInt(done?.cost_micro ?? '0');
    expect(cost).toBeGreaterThan(0n);

    const after = await call(member, 'billing.balance', {}, 'GET');
    expect(BigInt(after.availableMicro ?? '-1')).toBe(10_500_000n - cost);
    await harness.services.spend.flush();
    const conservation = await call(harness.adminToken, 'admin.conservation', { tenantId }, 'GET');
    expect(conservation).toMatchObject({ status: 'ok', driftMicro: '0' });
  });
});
