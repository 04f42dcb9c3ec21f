import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Client, createClient } from '../../src/client.js';
import { SCRIPTS } from '../../src/store/scripts.generated.js';
import { CONTRACT_VERSION, VERSION } from '../../src/version.js';
import { createHarness, type Harness } from '../support/harness.js';
import { serve } from '../support/serve.js';

let harness: Harness;
let server: { url: string; close(): Promise<void> };
let client: Client;

beforeAll(async () => {
  harness = await createHarness();
  server = await serve(harness.app);
  client = createClient({ url: server.url, token: harness.adminToken });
});
afterAll(async () => {
  await server.close();
  await harness.close();
});

describe('admin.system.info (typed client over HTTP)', () => {
  it('reports the version and the engines in use', async () => {
    const info = await client.admin.system.info.query();
    expect(info).toEqual({
      version: VERSION,
      contractVersion: CONTRACT_VERSION,
      engines: { database: harness.services.engines.db, store: 'redis', upstream: 'local' },
      scripts: Object.values(SCRIPTS).map(({ name, version, sha1 }) => ({ name, version, sha1 })),
      upstream: { name: 'local', contract: { status: 'not_applicable' }, breaker: 'closed' },
    });
  });
});

describe('admin.tenants', () => {
  it('creates a tenant, then gets and lists it', async () => {
    const created = await client.admin.tenants.create.mutate({ name: '  Acme Labs ', tier: 4 });
    expect(created).toMatchObject({ name: 'Acme Labs', tier: 4, frozen: false, monthlyCapMicro: null });
    expect(created.id).toMatch(/^ten_[0-9a-f]{32}$/);
    expect(new Date(created.createdAt).toISOString()).toBe(created.createdAt);

    expect(await client.admin.tenants.get.query({ id: created.id })).toEqual(created);
    const listed = await client.admin.tenants.list.query();
    expect(listed.map((tenant) => tenant.id)).toContain(created.id);
  });

  it('batches several calls in one HTTP request', async () => {
    const [a, b] = await Promise.all([
      client.admin.tenants.create.mutate({ name: 'Batch A', tier: 1 }),
      client.admin.tenants.create.mutate({ name: 'Batch B', tier: 9 }),
    ]);
    expect([a.tier, b.tier]).toEqual([1, 9]);
    const batched = harness.logs.filter(
      (r) => r.msg === 'request' && String(r.path).includes('admin.tenants.create,admin.tenants.create'),
    );
    expect(batched).toHaveLength(1);
  });

  it('rejects wrong procedure names and inputs at compile time', () => {
    // These lines exist for `npm run typecheck`: each must be a type error, or tsc fails on the
    // unused directive. They never run.
    const compileOnly = () => {
      // @ts-expect-error tier must be a number
      void client.admin.tenants.create.mutate({ name: 'x', tier: '4' });
      // @ts-expect-error no such procedure
      void client.admin.tenants.destroy.mutate({ id: 'x' });
    };
    expect(typeof compileOnly).toBe('function');
  });
});
