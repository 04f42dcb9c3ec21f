import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant } from '../../src/tenants/tenants.js';
import { spicegateCli } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { serve } from '../support/serve.js';

let harness: Harness;
let server: { url: string; close(): Promise<void> };
let tenantId: string;

beforeAll(async () => {
  harness = await createHarness();
  server = await serve(harness.app);
  tenantId = (await createTenant(harness.services, { name: 'Cli', tier: 4 })).id;
});
afterAll(async () => {
  await server.close();
  await harness.close();
});

/** `spicegate …` (the real bin) against this file's gateway, as its admin. */
const spicegate = (args: string[]) => spicegateCli(server.url, harness.adminToken, args);

// 60 s a test: each CLI run starts a Node process, seconds on a busy machine.
describe('spicegate pricing and flags', { timeout: 60_000 }, () => {
  it('pricing set --tenant then pricing get shows the override; --clear removes it', async () => {
    const set = await spicegate([
      'pricing',
      'set',
      '--pool',
      'cheap',
      '--price',
      '250',
      '--tenant',
      tenantId,
    ]);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({
      pool: 'cheap',
      tenantId,
      microPer1kTokens: '250',
      previousMicroPer1kTokens: null,
    });
    expect(harness.services.prices.pricesFor(tenantId).cheap).toBe(250n);
    const got = await spicegate(['pricing', 'get']);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout).overrides).toEqual([
      { tenantId, pool: 'cheap', microPer1kTokens: '250', updatedAt: expect.any(String) },
    ]);
    const cleared = await spicegate(['pricing', 'set', '--pool', 'cheap', '--clear', '--tenant', tenantId]);
    expect(cleared.code).toBe(0);
    expect(harness.services.prices.pricesFor(tenantId).cheap).toBe(200n);
  });

  it('flags set --enabled false then flags get shows it; --clear restores the default', async () => {
    const set = await spicegate(['flags', 'set', '--flag', 'keys', '--enabled', 'false']);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({ flag: 'keys', tenantId: null, enabled: false, previous: null });
    const got = await spicegate(['flags', 'get']);
    expect(JSON.parse(got.stdout).flags).toContainEqual({ flag: 'keys', enabled: false, source: 'runtime' });
    expect((await spicegate(['flags', 'set', '--flag', 'keys', '--clear'])).code).toBe(0);
    expect(harness.services.flags.enabled('keys')).toBe(true);
  });

  it('refuses an unknown pool or flag, a missing price and a non-boolean --enabled with exit code 2', async () => {
    for (const args of [
      ['pricing', 'set', '--pool', 'gold', '--price', '1'],
      ['pricing', 'set', '--pool', 'cheap'],
      ['flags', 'set', '--flag', 'billing', '--enabled', 'true'],
      ['flags', 'set', '--flag', 'keys', '--enabled', 'yes'],
    ]) {
      const result = await spicegate(args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain('spicegate:');
    }
  });

  it('a price the gateway refuses (zero) exits 1 with its message', async () => {
    const result = await spicegate(['pricing', 'set', '--pool', 'cheap', '--price', '0']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('microPer1kTokens');
  });
});
