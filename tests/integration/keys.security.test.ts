import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { data, trpc } from '../support/trpc.js';

let harness: Harness;
let tenantA: string;
let tenantB: string;
let memberA: string;
let memberB: string;
let keyA: { id: string; key: string };

beforeAll(async () => {
  harness = await createHarness();
  tenantA = (await createTenant(harness.services, { name: 'A', tier: 4 })).id;
  tenantB = (await createTenant(harness.services, { name: 'B', tier: 4 })).id;
  const issue = async (tenantId: string) =>
    (await issueCallerToken(harness.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 }))
      .token;
  memberA = await issue(tenantA);
  memberB = await issue(tenantB);
  keyA = data(await trpc(harness, memberA, 'keys.create', { name: 'a-key' }, 'POST'));
});
afterAll(() => harness.close());

const withKey = (key: string, app: Harness = harness) =>
  app.request('/api/v1/key', { headers: { authorization: `Bearer ${key}` } });

/** The key's status on `app` once it stops being 200, or 200 if that takes longer than 5 s. */
async function statusWithin5s(key: string, app: Harness): Promise<number> {
  const since = Date.now();
  let status = 200;
  while (status === 200 && Date.now() - since < 5_000) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    status = (await withKey(key, app)).status;
  }
  return status;
}

describe('API key authentication', () => {
  it('a tampered secret, an unknown prefix and a malformed key get the same 401 body', async () => {
    const secret = keyA.key.split('_').at(-1) as string;
    const tampered = `${keyA.key.slice(0, -secret.length)}${secret.slice(0, -1)}${secret.endsWith('a') ? 'b' : 'a'}`;
    const unknownPrefix = `sg_live_AAAAAAAAAAAA_${secret}`;
    const bodies = [];
    for (const key of [tampered, unknownPrefix, 'sg_live_short', 'not-a-key']) {
      const response = await withKey(key);
      expect(response.status).toBe(401);
      const body = (await response.json()) as { error: Record<string, unknown> };
      bodies.push({ ...body.error, requestId: '' });
    }
    expect(new Set(bodies.map((body) => JSON.stringify(body))).size).toBe(1);
  });

  it('a revoked key stops working on a second instance sharing Redis within 5 s', async () => {
    const second = await createHarness({ shareWith: harness });
    second.services.keys.start();
    try {
      const created = data<{ id: string; key: string }>(
        await trpc(harness, memberA, 'keys.create', { name: 'shared' }, 'POST'),
      );
      expect((await withKey(created.key, second)).status).toBe(200);
      await trpc(harness, memberA, 'keys.revoke', { id: created.id }, 'POST');
      expect(await statusWithin5s(created.key, second)).toBe(401);
    } finally {
      await second.close();
    }
  });

  it('freezing a tenant stops its keys on a second instance within 5 s; unfreezing restores them', async () => {
    const second = await createHarness({ shareWith: harness });
    second.services.keys.start();
    try {
      const tenantC = (await createTenant(harness.services, { name: 'C', tier: 4 })).id;
      const created = data<{ key: string }>(
        await trpc(harness, harness.adminToken, 'keys.create', { name: 'c-key', tenantId: tenantC }, 'POST'),
      );
      expect((await withKey(created.key, second)).status).toBe(200);
      expect(
        (
          await trpc(
            harness,
            harness.adminToken,
            'admin.tenants.update',
            { id: tenantC, frozen: true },
            'POST',
          )
        ).status,
      ).toBe(200);
      expect(await statusWithin5s(created.key, second)).toBe(401);
      await trpc(harness, harness.adminToken, 'admin.tenants.update', { id: tenantC, frozen: false }, 'POST');
      expect((await withKey(created.key)).status).toBe(200);
    } finally {
      await second.close();
    }
  });

  it('a member cannot see or touch another tenant’s keys (not found)', async () => {
    expect((await trpc(harness, memberB, 'keys.get', { id: keyA.id })).status).toBe(404);
    expect((await trpc(harness, memberB, 'keys.get', { id: keyA.id, tenantId: tenantA })).status).toBe(404);
    expect((await trpc(harness, memberB, 'keys.revoke', { id: keyA.id }, 'POST')).status).toBe(404);
    expect((await trpc(harness, memberB, 'keys.rotate', { id: keyA.id }, 'POST')).status).toBe(404);
    expect(
      (await trpc(harness, memberB, 'keys.create', { name: 'x', tenantId: tenantA }, 'POST')).status,
    ).toBe(404);
    const listed = data<{ id: string }[]>(await trpc(harness, memberB, 'keys.list'));
    expect(listed.map((key) => key.id)).not.toContain(keyA.id);
    expect((await withKey(keyA.key)).status).toBe(200);
  });

  it('an operator cannot create or revoke keys; an admin can, naming the tenant', async () => {
    const operator = (
      await issueCallerToken(harness.services, { role: 'operator', subject: 'op', ttlSeconds: 600 })
    ).token;
    expect(
      (await trpc(harness, operator, 'keys.create', { name: 'x', tenantId: tenantA }, 'POST')).status,
    ).toBe(403);
    expect((await trpc(harness, operator, 'keys.list', { tenantId: tenantA })).status).toBe(200);
    expect(
      (
        await trpc(
          harness,
          harness.adminToken,
          'keys.create',
          { name: 'by-admin', tenantId: tenantB },
          'POST',
        )
      ).status,
    ).toBe(200);
  });
});

describe('Authorization header fuzz', () => {
  const SEED = Number(process.env.PROPERTY_SEED ?? Math.floor(Math.random() * 2 ** 31));

  it(`answers only 400 or 401 (200 for the key itself), never 5xx (seed ${SEED})`, async () => {
    // RFC 7235 §2.1: the scheme is case-insensitive and one or more spaces follow it.
    const valid = new Set([`bearer ${keyA.key}`, `Bearer  ${keyA.key}`]);
    const header = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ maxLength: 120 }).map((s) => `Bearer ${s}`),
      fc.stringMatching(/^sg_(live|test)_[A-Z2-7]{0,14}_[0-9A-Za-z]{0,34}$/).map((s) => `Bearer ${s}`),
      fc.constant(`Bearer ${keyA.key}x`),
      fc.constant(`bearer ${keyA.key}`),
      fc.constant(`Bearer  ${keyA.key}`),
    );
    await fc.assert(
      fc.asyncProperty(header, async (value) => {
        let response: Response;
        try {
          response = await harness.request('/api/v1/key', { headers: { authorization: value } });
        } catch {
          return; // Not a valid header value at all: the HTTP layer refuses it before us.
        }
        expect(valid.has(value) ? [200] : [400, 401]).toContain(response.status);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
});
