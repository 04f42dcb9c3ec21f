import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { poolDecisions } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { costMicro } from '../../src/pricing/pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { infer } from '../support/sse.js';

/** Tiers map to pools; a pool the caller may not use is replaced and the decision recorded. */
let harness: Harness;

beforeAll(async () => {
  harness = await createHarness({ config: { localModelTokens: 4 } });
});
afterAll(() => harness.close());

async function caller(tier: number, options: { sandbox?: boolean } = {}) {
  const tenant = await createTenant(harness.services, { name: `Tier ${tier}`, tier });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  const { key } = await createKey(harness.services, tenant.id, { name: 'k', ...options });
  return { tenantId: tenant.id, key };
}

async function ask(key: string, pool: string) {
  const response = await infer(harness, key, { prompt: 'abcdefgh', max_tokens: 4, pool });
  await response.text();
  return response;
}

async function decisions(tenantId: string) {
  return harness.services.db.select().from(poolDecisions).where(eq(poolDecisions.tenantId, tenantId));
}

describe('pool enforcement', () => {
  it('routes two tenants of different tiers asking for the same pool differently, and the rows say why', async () => {
    const enterprise = await caller(8);
    const free = await caller(2);

    const granted = await ask(enterprise.key, 'flagship');
    expect(granted.status).toBe(200);
    expect(granted.headers.get('x-pool-used')).toBe('flagship');

    const downgraded = await ask(free.key, 'flagship');
    expect(downgraded.status).toBe(200);
    expect(downgraded.headers.get('x-pool-used')).toBe('standard');

    await expect.poll(() => decisions(free.tenantId)).toHaveLength(1);
    const [row] = await decisions(free.tenantId);
    expect(row).toMatchObject({
      requested: 'flagship',
      actual: 'standard',
      reason: 'tier',
      keyId: expect.any(String),
    });
    // The reservation at the pool actually used: "abcdefgh" at its bound (8 bytes + the chat
    // template's 24 tokens) + 4 at `standard`.
    expect(row?.costMicro).toBe(costMicro('standard', 8 + 24 + 4));
    // A request served as asked is not a decision.
    expect(await decisions(enterprise.tenantId)).toEqual([]);
  });

  it('a sandbox key gets cheap whatever it asks for (reason sandbox); an unknown pool gets the best allowed (reason unknown_pool)', async () => {
    const sandbox = await caller(8, { sandbox: true });
    expect((await ask(sandbox.key, 'reasoning')).headers.get('x-pool-used')).toBe('cheap');
    const pro = await caller(5);
    expect((await ask(pro.key, 'gpt-9')).headers.get('x-pool-used')).toBe('reasoning');

    await expect
      .poll(() => decisions(sandbox.tenantId))
      .toMatchObject([{ requested: 'reasoning', actual: 'cheap', reason: 'sandbox' }]);
    await expect
      .poll(() => decisions(pro.tenantId))
      .toMatchObject([{ requested: 'gpt-9', actual: 'reasoning', reason: 'unknown_pool' }]);
  });

  it('a denied request records no decision', async () => {
    const tenant = await createTenant(harness.services, { name: 'Broke', tier: 2 });
    const { key } = await createKey(harness.services, tenant.id, { name: 'k' });
    expect((await ask(key, 'flagship')).status).toBe(402);
    // Give a fire-and-forget insert the time it would take, then check nothing was written.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await decisions(tenant.id)).toEqual([]);
  });
});
