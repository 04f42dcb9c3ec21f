import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
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

const withKey = (key: string) =>
  harness.request('/api/v1/key', { headers: { authorization: `Bearer ${key}` } });

/** The tRPC paths the gateway served since `from` (an index into its log). */
const callsSince = (from: number) =>
  harness.logs
    .slice(from)
    .filter((record) => record.msg === 'request')
    .map((record) => String(record.path));

// 60 s a test: each CLI run builds the bundle (cached) and starts a Node process, seconds on a busy machine.
describe('spicegate key (admin, naming keys by id)', { timeout: 60_000 }, () => {
  it('key list --tenant ID lists that tenant’s keys', async () => {
    const created = await createKey(harness.services, tenantId, { name: 'listed' });
    const listed = await spicegate(['key', 'list', '--tenant', tenantId]);
    expect(listed.code).toBe(0);
    const keys = JSON.parse(listed.stdout) as { id: string; tenantId: string; name: string }[];
    expect(keys).toContainEqual(expect.objectContaining({ id: created.id, tenantId, name: 'listed' }));
    expect(listed.stdout).not.toContain(created.key.split('_').at(-1));
  });

  it('key revoke --id (no --tenant) revokes with one call, without listing every tenant’s keys', async () => {
    const created = await createKey(harness.services, tenantId, { name: 'leaked' });
    const from = harness.logs.length;
    const revoked = await spicegate(['key', 'revoke', '--id', created.id]);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toMatchObject({
      id: created.id,
      tenantId,
      revokedAt: expect.any(String),
    });
    expect(callsSince(from)).toEqual(['/trpc/admin.system.info', '/trpc/keys.revoke']);
    expect((await withKey(created.key)).status).toBe(401);
  });

  it('key rotate --id (no --tenant): the new key works, the old one stops', async () => {
    const created = await createKey(harness.services, tenantId, { name: 'rotated', rpmLimit: 42 });
    const rotated = await spicegate(['key', 'rotate', '--id', created.id]);
    expect(rotated.code).toBe(0);
    const answer = JSON.parse(rotated.stdout) as { id: string; key: string; tenantId: string };
    expect(answer).toMatchObject({ tenantId, oldKeyRevokedAt: expect.any(String) });
    expect(rotated.stderr).toContain('only time the new key is shown');
    expect((await withKey(created.key)).status).toBe(401);
    expect(await (await withKey(answer.key)).json()).toMatchObject({ id: answer.id, rpmLimit: 42 });
  });

  it('key rotate --id --grace SECONDS keeps the old key working through the grace period', async () => {
    const created = await createKey(harness.services, tenantId, { name: 'graceful' });
    const rotated = await spicegate([
      'key',
      'rotate',
      '--id',
      created.id,
      '--grace',
      '3600',
      '--field',
      'key',
    ]);
    expect(rotated.code).toBe(0);
    expect((await withKey(created.key)).status).toBe(200);
    expect((await withKey(rotated.stdout.trim())).status).toBe(200);
  });

  it('an unknown key id or a tenant that does not own the key fails with "No key" and exit code 1', async () => {
    const created = await createKey(harness.services, tenantId, { name: 'kept' });
    const other = (await createTenant(harness.services, { name: 'Other', tier: 4 })).id;
    const results = [
      await spicegate(['key', 'revoke', '--id', `key_${'0'.repeat(32)}`]),
      await spicegate(['key', 'revoke', '--id', created.id, '--tenant', other]),
      await spicegate(['key', 'rotate', '--id', created.id, '--tenant', other]),
    ];
    for (const result of results) {
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('No key');
    }
    expect((await withKey(created.key)).status).toBe(200);
  });

  it('key rotate without --id is a usage error (exit code 2)', async () => {
    const result = await spicegate(['key', 'rotate']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('key rotate needs --id');
  });
});
