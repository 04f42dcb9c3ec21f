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

describe('keys under pressure', () => {
  it('20 concurrent creations leave exactly the maximum active', async () => {
    const fresh = (await createTenant(harness.services, { name: 'Race', tier: 2 })).id;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        trpc(harness, harness.adminToken, 'keys.create', { name: `r${i}`, tenantId: fresh }, 'POST'),
      ),
    );
    expect(results.filter((result) => result.status === 200)).toHaveLength(10);
    expect(results.filter((result) => result.status === 409)).toHaveLength(10);
  });

  it('a rotation at the maximum works (the old key is being replaced) and is all-or-nothing', async () => {
    const full = (await createTenant(harness.services, { name: 'Full', tier: 2 })).id;
    const ids: string[] = [];
    for (let i = 0; i < 10; i += 1) {
      ids.push(
        data<{ id: string }>(
          await trpc(harness, harness.adminToken, 'keys.create', { name: `f${i}`, tenantId: full }, 'POST'),
        ).id,
      );
    }
    const rotated = await trpc(
      harness,
      harness.adminToken,
      'keys.rotate',
      { id: ids[0], tenantId: full, graceSeconds: 60 },
      'POST',
    );
    expect(rotated.status).toBe(200);
    // Now 11 rows are active (one in its grace window): another rotation with grace must fail whole.
    const before = data<{ id: string; revokedAt: string | null }[]>(
      await trpc(harness, harness.adminToken, 'keys.list', { tenantId: full }),
    );
    const second = await trpc(
      harness,
      harness.adminToken,
      'keys.rotate',
      { id: ids[1], tenantId: full, graceSeconds: 60 },
      'POST',
    );
    expect(second.status).toBe(409);
    const after = data<{ id: string; revokedAt: string | null }[]>(
      await trpc(harness, harness.adminToken, 'keys.list', { tenantId: full }),
    );
    expect(after).toEqual(before);
  });

  it('rotating a key already in its grace window never extends it', async () => {
    const tenant = (await createTenant(harness.services, { name: 'Grace', tier: 2 })).id;
    const key = data<{ id: string }>(
      await trpc(harness, harness.adminToken, 'keys.create', { name: 'g', tenantId: tenant }, 'POST'),
    );
    const first = data<{ oldKeyRevokedAt: string }>(
      await trpc(
        harness,
        harness.adminToken,
        'keys.rotate',
        { id: key.id, tenantId: tenant, graceSeconds: 60 },
        'POST',
      ),
    );
    const second = data<{ oldKeyRevokedAt: string }>(
      await trpc(
        harness,
        harness.adminToken,
        'keys.rotate',
        { id: key.id, tenantId: tenant, graceSeconds: 7 * 86_400 },
        'POST',
      ),
    );
    expect(Date.parse(second.oldKeyRevokedAt)).toBe(Date.parse(first.oldKeyRevokedAt));
  });
});
