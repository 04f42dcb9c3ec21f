import { HttpResponse, http } from 'msw';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant } from '../../src/tenants/tenants.js';
import { spicegateCli } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork } from '../support/msw.js';
import { serve } from '../support/serve.js';

const API = 'https://api.nowpayments.test/v1';

/** The NOWPayments API as the in-process gateway calls it (the CLI talks to the gateway only). */
const orders: string[] = [];
const network = mockNetwork(
  http.post(`${API}/invoice`, async ({ request }) => {
    const body = (await request.json()) as { order_id: string };
    orders.push(body.order_id);
    return HttpResponse.json({
      id: 6_000_000 + orders.length,
      invoice_url: `https://nowpayments.test/payment/?iid=${6_000_000 + orders.length}`,
    });
  }),
);

let harness: Harness;
let server: { url: string; close(): Promise<void> };
let tenantId: string;

beforeAll(async () => {
  harness = await createHarness({
    config: { nowpaymentsApiKey: 'np-cli-key', nowpaymentsApiUrl: API },
  });
  server = await serve(harness.app);
  tenantId = (await createTenant(harness.services, { name: 'Cli payer', tier: 4 })).id;
});
afterAll(async () => {
  await server.close();
  await harness.close();
  network.close();
});

/** `spicegate …` (the real bin) against this file's gateway, as its admin. */
const spicegate = (args: string[]) => spicegateCli(server.url, harness.adminToken, args);

// 60 s a test: each CLI run builds the bundle (cached) and starts a Node process, seconds on a busy machine.
describe('spicegate pack / invoice / payments', { timeout: 60_000 }, () => {
  it('pack list prints the packs with their prices and micro-credits', async () => {
    const listed = await spicegate(['pack', 'list']);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      { name: 'starter', priceAmount: '5', priceCurrency: 'usd', creditsMicro: '5000000' },
      { name: 'standard', priceAmount: '10', priceCurrency: 'usd', creditsMicro: '10500000' },
      { name: 'premium', priceAmount: '25', priceCurrency: 'usd', creditsMicro: '27500000' },
    ]);
  });

  it('invoice create opens an invoice that payments then lists', async () => {
    const created = await spicegate(['invoice', 'create', '--tenant', tenantId, '--pack', 'standard']);
    expect(created.code).toBe(0);
    const answer = JSON.parse(created.stdout) as { paymentId: string; invoiceUrl: string };
    expect(answer.paymentId).toMatch(/^pay_[0-9a-f]{32}$/);
    expect(orders.at(-1)).toBe(answer.paymentId);
    expect(answer.invoiceUrl).toBe(`https://nowpayments.test/payment/?iid=${6_000_000 + orders.length}`);

    const payments = await spicegate(['payments', '--tenant', tenantId]);
    expect(payments.code).toBe(0);
    expect(JSON.parse(payments.stdout)).toEqual([
      expect.objectContaining({
        paymentId: answer.paymentId,
        pack: 'standard',
        priceAmount: '10',
        creditsMicro: '10500000',
        status: 'waiting',
        invoiceUrl: answer.invoiceUrl,
      }),
    ]);
  });

  it('invoice create --field invoiceUrl prints the URL alone, for a script', async () => {
    const created = await spicegate([
      'invoice',
      'create',
      '--tenant',
      tenantId,
      '--pack',
      'starter',
      '--field',
      'invoiceUrl',
    ]);
    expect(created.code).toBe(0);
    expect(created.stdout).toBe(`https://nowpayments.test/payment/?iid=${6_000_000 + orders.length}\n`);
  });

  it('an unknown pack fails with exit code 1 naming the packs; no --pack is a usage error (2)', async () => {
    const before = orders.length;
    const unknown = await spicegate(['invoice', 'create', '--tenant', tenantId, '--pack', 'platinum']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('Unknown pack platinum; packs: starter, standard, premium');
    const missing = await spicegate(['invoice', 'create', '--tenant', tenantId]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('invoice create needs --pack');
    expect(orders.length).toBe(before);
  });
});
