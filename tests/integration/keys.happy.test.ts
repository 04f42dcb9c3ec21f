import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { apiKeys } from '../../db/schema/index.js';
import { KEY_PATTERN } from '../../src/keys/format.js';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { data, trpc } from '../support/trpc.js';

let harness: Harness;
let tenantId: string;
let member: string;

beforeAll(async () => {
  harness = await createHarness();
  tenantId = (await createTenant(harness.services, { name: 'Keys Inc', tier: 4 })).id;
  member = (
    await issueCallerToken(harness.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
  ).token;
});
afterAll(() => harness.close());

const keyInfo = (key: string) =>
  harness.request('/api/v1/key', { headers: { authorization: `Bearer ${key}` } });

describe('keys.create', () => {
  it('returns the cleartext key once, and the key authenticates', async () => {
    const created = data<{ id: string; key: string; prefix: string }>(
      await trpc(harness, member, 'keys.create', { name: 'server', monthlyCapMicro: '5000000' }, 'POST'),
    );
    expect(created.key).toMatch(KEY_PATTERN);
    expect(created.key.startsWith(`${created.prefix}_`)).toBe(true);
    expect(created.key.startsWith('sg_live_')).toBe(true);
    const response = await keyInfo(created.key);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      id: created.id,
      prefix: created.prefix,
      tenantId,
      sandbox: false,
      scopes: [],
      rpmLimit: 60,
      tpdLimit: null,
      monthlyCapMicro: '5000000',
    });
  });

  it('makes sandbox keys with the sandbox limits, whatever was asked', async () => {
    const created = data<{ key: string }>(
      await trpc(
        harness,
        member,
        'keys.create',
        { name: 'try', sandbox: true, rpmLimit: 1000, tpdLimit: 10 ** 6 },
        'POST',
      ),
    );
    expect(created.key.startsWith('sg_test_')).toBe(true);
    expect(await (await keyInfo(created.key)).json()).toMatchObject({
      sandbox: true,
      rpmLimit: 10,
      tpdLimit: 10_000,
    });
  });
});

describe('keys.list and keys.get', () => {
  it('never return a hash, a salt or a secret', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'listed' }, 'POST'),
    );
    const listed = await trpc(harness, member, 'keys.list');
    const got = await trpc(harness, member, 'keys.get', { id: created.id });
    for (const text of [JSON.stringify(listed.body), JSON.stringify(got.body)]) {
      expect(text).not.toMatch(/"(hash|salt|secret|key)"/);
      expect(text).not.toContain(created.key.split('_').at(-1));
    }
    expect(data<{ id: string }[]>(listed).map((key) => key.id)).toContain(created.id);
    expect(data<{ name: string }>(got).name).toBe('listed');
  });
});

describe('keys.revoke, keys.rotate and keys.update', () => {
  it('revoke: the key stops working at once on this instance', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'doomed' }, 'POST'),
    );
    expect((await keyInfo(created.key)).status).toBe(200);
    expect((await trpc(harness, member, 'keys.revoke', { id: created.id }, 'POST')).status).toBe(200);
    expect((await keyInfo(created.key)).status).toBe(401);
  });

  it('rotate without grace: the new key works, the old one does not', async () => {
    const old = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'rotating', rpmLimit: 42 }, 'POST'),
    );
    const rotated = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.rotate', { id: old.id }, 'POST'),
    );
    expect(rotated.id).not.toBe(old.id);
    expect((await keyInfo(old.key)).status).toBe(401);
    expect(await (await keyInfo(rotated.key)).json()).toMatchObject({ rpmLimit: 42 });
  });

  it('rotate with a grace window: both work until it ends', async () => {
    const old = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'graceful' }, 'POST'),
    );
    const rotated = data<{ key: string; oldKeyRevokedAt: string }>(
      await trpc(harness, member, 'keys.rotate', { id: old.id, graceSeconds: 3_600 }, 'POST'),
    );
    expect((await keyInfo(old.key)).status).toBe(200);
    expect((await keyInfo(rotated.key)).status).toBe(200);
    expect(Date.parse(rotated.oldKeyRevokedAt)).toBeGreaterThan(Date.now() + 3_500_000);
    // …and once the window has passed, the old key is refused (the clock is moved, not waited for).
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.parse(rotated.oldKeyRevokedAt) + 1);
      expect((await keyInfo(old.key)).status).toBe(401);
      expect((await keyInfo(rotated.key)).status).toBe(200);
    } finally {
      vi.useRealTimers();
    }
  });

  it('update changes the limits a key carries', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'tuned' }, 'POST'),
    );
    await trpc(
      harness,
      member,
      'keys.update',
      { id: created.id, rpmLimit: 5, tpdLimit: 1000, monthlyCapMicro: null },
      'POST',
    );
    expect(await (await keyInfo(created.key)).json()).toMatchObject({
      rpmLimit: 5,
      tpdLimit: 1000,
      monthlyCapMicro: null,
    });
  });

  it('update cannot raise a sandbox key past the sandbox limits', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'sandbox-tuned', sandbox: true }, 'POST'),
    );
    await trpc(harness, member, 'keys.update', { id: created.id, rpmLimit: 500, tpdLimit: 10 ** 6 }, 'POST');
    expect(await (await keyInfo(created.key)).json()).toMatchObject({ rpmLimit: 10, tpdLimit: 10_000 });
    await trpc(harness, member, 'keys.update', { id: created.id, rpmLimit: 3 }, 'POST');
    expect(await (await keyInfo(created.key)).json()).toMatchObject({ rpmLimit: 3 });
  });

  it('writes last_used_at off the request path, in batches', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'used' }, 'POST'),
    );
    await keyInfo(created.key);
    expect(
      data<{ lastUsedAt: string | null }>(await trpc(harness, member, 'keys.get', { id: created.id }))
        .lastUsedAt,
    ).toBeNull();
    await harness.services.keys.flushUsage();
    expect(
      data<{ lastUsedAt: string | null }>(await trpc(harness, member, 'keys.get', { id: created.id }))
        .lastUsedAt,
    ).not.toBeNull();
  });

  it('writes the last use of every key used, in one flush, and never moves it back', async () => {
    // A tenant of its own: the file's tenant is near its active-key limit.
    const own = (await createTenant(harness.services, { name: 'Flush Inc', tier: 4 })).id;
    const caller = (
      await issueCallerToken(harness.services, {
        role: 'member',
        tenantId: own,
        subject: 'dev',
        ttlSeconds: 600,
      })
    ).token;
    const lastUsed = async (id: string) =>
      data<{ lastUsedAt: string | null }>(await trpc(harness, caller, 'keys.get', { id })).lastUsedAt;
    const [first, second] = await Promise.all(
      ['flush-a', 'flush-b'].map(async (name) =>
        data<{ id: string; key: string }>(await trpc(harness, caller, 'keys.create', { name }, 'POST')),
      ),
    );
    if (first === undefined || second === undefined) throw new Error('keys not created');
    await keyInfo(first.key);
    await keyInfo(second.key);
    const before = Date.now();
    expect(await harness.services.keys.flushUsage()).toBeGreaterThanOrEqual(2);
    for (const id of [first.id, second.id]) {
      const at = Date.parse((await lastUsed(id)) as string);
      expect(at).toBeGreaterThan(before - 60_000);
      expect(at).toBeLessThanOrEqual(Date.now());
    }
    // Another instance already wrote a later use: this one's older time does not replace it.
    const later = new Date(Date.now() + 3_600_000);
    await harness.db.update(apiKeys).set({ lastUsedAt: later }).where(eq(apiKeys.id, first.id));
    await keyInfo(first.key);
    await harness.services.keys.flushUsage();
    expect(Date.parse((await lastUsed(first.id)) as string)).toBe(later.getTime());
  });
});

describe('peppers', () => {
  it('a key hashed with an older pepper still verifies on an instance with a newer one, and is rehashed', async () => {
    const created = data<{ id: string; key: string }>(
      await trpc(harness, member, 'keys.create', { name: 'peppered' }, 'POST'),
    );
    const newer = `2:${'n'.repeat(40)},${harness.shared.peppers}`;
    const second = await createHarness({ shareWith: harness, peppers: newer });
    try {
      expect(
        (await second.request('/api/v1/key', { headers: { authorization: `Bearer ${created.key}` } })).status,
      ).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(second.logs.some((line) => line.msg === 'API key rehashed with the newest pepper')).toBe(true);
      // Rehashed: an instance knowing only the new pepper accepts it now.
      const onlyNew = await createHarness({ shareWith: harness, peppers: `2:${'n'.repeat(40)}` });
      try {
        expect(
          (await onlyNew.request('/api/v1/key', { headers: { authorization: `Bearer ${created.key}` } }))
            .status,
        ).toBe(200);
      } finally {
        await onlyNew.close();
      }
    } finally {
      await second.close();
    }
  });
});
