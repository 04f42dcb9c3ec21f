import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';

/** RFC 7235 §2.1: the auth scheme is case-insensitive, on every route that takes a bearer. */

const metricsToken = 'metrics-secret-0123456789';
let harness: Harness;
let liveKey: string;

beforeAll(async () => {
  harness = await createHarness({ config: { metricsToken } });
  // Tier 9: its burst bucket (10) holds the six inference calls of this file made back to back.
  const tenant = await createTenant(harness.services, { name: 'Scheme', tier: 9 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 100_000_000n });
  liveKey = (await createKey(harness.services, tenant.id, { name: 'live' })).key;
});
afterAll(() => harness.close());

describe.each(['bearer', 'BEARER', 'bEaReR'])('the "%s" scheme', (scheme) => {
  it('authenticates an API key on the native inference route', async () => {
    const response = await harness.request('/api/v1/inference', {
      method: 'POST',
      headers: { authorization: `${scheme} ${liveKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'hello', max_tokens: 4 }),
    });
    expect(response.status).toBe(200);
    await response.text();
  });

  it('authenticates an API key on the OpenAI-compatible route', async () => {
    const response = await harness.request('/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `${scheme} ${liveKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'standard', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
    });
    expect(response.status).toBe(200);
  });

  it('authenticates a tRPC bearer token', async () => {
    const response = await harness.request('/trpc/admin.tenants.list', {
      headers: { authorization: `${scheme} ${harness.adminToken}` },
    });
    expect(response.status).toBe(200);
  });

  it('authenticates the METRICS_TOKEN on /metrics', async () => {
    const response = await harness.request('/metrics', {
      headers: { authorization: `${scheme} ${metricsToken}` },
    });
    expect(response.status).toBe(200);
  });
});
