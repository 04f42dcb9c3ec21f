import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { data, trpc } from '../support/trpc.js';

let harness: Harness;
let tenantId: string;
let member: string;

beforeAll(async () => {
  harness = await createHarness({ config: { apiKeysMaxActive: 10 } });
  tenantId = (await createTenant(harness.services, { name: 'Limits', tier: 2 })).id;
  member = (
    await issueCallerToken(harness.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
  ).token;
});
afterAll(() => harness.close());

describe('keys errors', () => {
  it('an 11th active key is refused with a clear 409; revoking one makes room', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 10; i += 1) {
      const created = await trpc(harness, member, 'keys.create', { name: `k${i}` }, 'POST');
      expect(created.status).toBe(200);
      ids.push(data<{ id: string }>(created).id);
    }
    const eleventh = await trpc(harness, member, 'keys.create', { name: 'k10' }, 'POST');
    expect(eleventh.status).toBe(409);
    expect(eleventh.body.error?.message).toContain('10 active keys');
    expect((await trpc(harness, member, 'keys.list')).body.result?.data).toHaveLength(10);
    await trpc(harness, member, 'keys.revoke', { id: ids[0] }, 'POST');
    expect((await trpc(harness, member, 'keys.create', { name: 'k10' }, 'POST')).status).toBe(200);
  });

  it.each([
    ['an empty name', { name: '  ' }],
    ['a negative rpm limit', { name: 'x', rpmLimit: -1 }],
    ['a fractional tpd limit', { name: 'x', tpdLimit: 1.5 }],
    ['a float cap', { name: 'x', monthlyCapMicro: '1.5' }],
    ['a numeric cap', { name: 'x', monthlyCapMicro: 5 }],
    ['a bad scope', { name: 'x', scopes: ['Bad Scope'] }],
  ])('create with %s is 400 and creates nothing', async (_, input) => {
    const before = (await trpc(harness, member, 'keys.list')).body.result?.data as unknown[];
    expect((await trpc(harness, member, 'keys.create', input, 'POST')).status).toBe(400);
    expect((await trpc(harness, member, 'keys.list')).body.result?.data).toHaveLength(before.length);
  });

  it.each(['keys.revoke', 'keys.rotate', 'keys.update'])('%s of an unknown key is 404', async (path) => {
    expect((await trpc(harness, member, path, { id: `key_${'0'.repeat(32)}` }, 'POST')).status).toBe(404);
  });

  it('rotating a revoked key is a 409', async () => {
    const created = (await trpc(harness, member, 'keys.list')).body.result?.data as {
      id: string;
      revokedAt: string | null;
    }[];
    const revoked = created.find((key) => key.revokedAt !== null);
    expect((await trpc(harness, member, 'keys.rotate', { id: revoked?.id }, 'POST')).status).toBe(409);
  });
});
