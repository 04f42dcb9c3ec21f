import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { creditGrants } from '../../db/schema/index.js';
import type { Grant } from '../../src/billing/credits.js';
import { silentLogger } from '../../src/observability/logger.js';
import { issueCallerToken, type Role } from '../../src/signing/tokens.js';
import { redisStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { data, trpc } from '../support/trpc.js';

/**
 * admin.credits.grant on a Redis of this file's own (its own port), so the outage tests can
 * freeze and stop it without touching any other file's store.
 */
let redis: RedisServer;
let harness: Harness;
const tokens: Record<string, string> = {};
let memberTenant: string;

beforeAll(async () => {
  redis = await startRedisServer();
  harness = await createHarness({ store: redisStore({ url: redis.url, log: silentLogger() }) });
  const issue = async (role: Role, tenantId?: string) =>
    (
      await issueCallerToken(harness.services, {
        role,
        subject: `${role}-user`,
        ttlSeconds: 600,
        ...(tenantId === undefined ? {} : { tenantId }),
      })
    ).token;
  memberTenant = await tenant();
  tokens.member = await issue('member', memberTenant);
  tokens.operator = await issue('operator');
  tokens.admin = await issue('admin');
});
afterAll(async () => {
  await harness.close();
  await redis.stop();
});

async function tenant(): Promise<string> {
  return (await createTenant(harness.services, { name: 'Credits', tier: 4 })).id;
}

function grant(input: Record<string, unknown>) {
  return grantAs(harness.adminToken, input);
}

function grantAs(token: string | undefined, input: Record<string, unknown>) {
  return trpc(harness, token, 'admin.credits.grant', input, 'POST');
}

async function balance(tenantId: string) {
  return data<{ creditedMicro: string; availableMicro: string }>(
    await trpc(harness, harness.adminToken, 'billing.balance', { tenantId }),
  );
}

function rows(grantId: string) {
  return harness.db.select().from(creditGrants).where(eq(creditGrants.id, grantId));
}

describe('admin.credits.grant', () => {
  it('raises billing.balance by exactly the amount and records one row', async () => {
    const tenantId = await tenant();
    const first = await grant({ tenantId, amountMicro: '5000000', reason: 'welcome credits' });
    expect(first.status).toBe(200);
    const granted = data<Grant>(first);
    expect(granted).toEqual({
      grantId: expect.stringMatching(/^grt_[0-9a-f]{32}$/),
      tenantId,
      amountMicro: '5000000',
      creditedMicro: '5000000',
      availableMicro: '5000000',
      alreadyApplied: false,
    });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '5000000', availableMicro: '5000000' });

    await grant({ tenantId, amountMicro: '7', reason: 'a second grant adds up' });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '5000007', availableMicro: '5000007' });

    const [row] = await rows(granted.grantId);
    expect(row).toMatchObject({
      tenantId,
      amountMicro: 5_000_000n,
      reason: 'welcome credits',
      grantedBy: 'bootstrap',
    });
  });

  it('applies the same grantId once: a second call changes nothing and says so', async () => {
    const tenantId = await tenant();
    const input = { tenantId, amountMicro: '2500000', reason: 'invoice 42', grantId: 'invoice-42' };
    const first = data<Grant>(await grant(input));
    const second = data<Grant>(await grant(input));
    expect(first).toMatchObject({ grantId: 'invoice-42', creditedMicro: '2500000', alreadyApplied: false });
    expect(second).toEqual({ ...first, alreadyApplied: true });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '2500000' });
    expect(await rows('invoice-42')).toHaveLength(1);
  });

  it('records the subject of an admin JWT as the granter', async () => {
    const tenantId = await tenant();
    const response = await grantAs(tokens.admin, {
      tenantId,
      amountMicro: '1',
      reason: 'by jwt',
      grantId: 'jwt-grant',
    });
    expect(response.status).toBe(200);
    expect((await rows('jwt-grant'))[0]?.grantedBy).toBe('admin-user');
  });

  it('answers 409 for the same grantId with another amount or tenant, and changes nothing', async () => {
    const tenantId = await tenant();
    const other = await tenant();
    await grant({ tenantId, amountMicro: '1000', reason: 'original', grantId: 'reused-id' });

    const otherAmount = await grant({
      tenantId,
      amountMicro: '9999',
      reason: 'original',
      grantId: 'reused-id',
    });
    expect(otherAmount.status).toBe(409);
    expect(otherAmount.body.error?.data).toMatchObject({
      code: 'CONFLICT',
      httpStatus: 409,
      appCode: 'conflict',
      grantId: 'reused-id',
    });

    const otherTenant = await grant({
      tenantId: other,
      amountMicro: '1000',
      reason: 'original',
      grantId: 'reused-id',
    });
    expect(otherTenant.status).toBe(409);

    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '1000' });
    expect(await balance(other)).toMatchObject({ creditedMicro: '0' });
    const stored = await rows('reused-id');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ tenantId, amountMicro: 1000n });
  });

  it('answers 404 for an unknown tenant and records nothing', async () => {
    const response = await grant({
      tenantId: `ten_${'0'.repeat(32)}`,
      amountMicro: '100',
      reason: 'nobody',
      grantId: 'ghost-grant',
    });
    expect(response.status).toBe(404);
    expect(response.body.error?.data).toMatchObject({ code: 'NOT_FOUND', appCode: 'not_found' });
    expect(await rows('ghost-grant')).toHaveLength(0);
  });

  it.each([
    ['zero', '0'],
    ['a negative amount', '-5'],
    ['a fraction', '1.5'],
    ['an exponent', '1e6'],
    ['a leading zero', '05'],
    ['an empty string', ''],
    ['more than 10^15', '1000000000000001'],
    ['a number instead of a decimal string', 5_000_000],
  ])('answers 400 with the issues for %s, and changes nothing', async (_, amountMicro) => {
    const tenantId = await tenant();
    const response = await grant({ tenantId, amountMicro, reason: 'bad', grantId: 'bad-amount' });
    expect(response.status).toBe(400);
    expect(response.body.error?.message).toContain('amountMicro');
    expect(response.body.error?.data).toMatchObject({
      code: 'BAD_REQUEST',
      httpStatus: 400,
      path: 'admin.credits.grant',
      issues: [expect.objectContaining({ path: 'amountMicro' })],
    });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '0' });
    expect(await rows('bad-amount')).toHaveLength(0);
  });

  it('accepts exactly 10^15', async () => {
    const tenantId = await tenant();
    const response = await grant({ tenantId, amountMicro: '1000000000000000', reason: 'max' });
    expect(response.status).toBe(200);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '1000000000000000' });
  });

  it('answers 400 for a missing reason or a grantId outside the id alphabet', async () => {
    const tenantId = await tenant();
    const noReason = await grant({ tenantId, amountMicro: '1', reason: '   ' });
    expect(noReason.status).toBe(400);
    expect(noReason.body.error?.data.issues).toEqual([expect.objectContaining({ path: 'reason' })]);
    const badId = await grant({ tenantId, amountMicro: '1', reason: 'x', grantId: '{t:other}:bal' });
    expect(badId.status).toBe(400);
    expect(badId.body.error?.data.issues).toEqual([expect.objectContaining({ path: 'grantId' })]);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '0' });
  });

  it('refuses a grant that would take the balance past the store ceiling, and keeps no row for it', async () => {
    const tenantId = await tenant();
    for (let i = 0; i < 4; i++) {
      expect((await grant({ tenantId, amountMicro: '1000000000000000', reason: 'big' })).status).toBe(200);
    }
    const over = await grant({
      tenantId,
      amountMicro: '1000000000000000',
      reason: 'too big',
      grantId: 'over-ceiling',
    });
    expect(over.status).toBe(400);
    expect(over.body.error?.data).toMatchObject({ appCode: 'invalid_request' });
    expect(await rows('over-ceiling')).toHaveLength(0);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '4000000000000000' });
  });
});

describe('who may grant', () => {
  it.each([
    ['a member (even of its own tenant)', 'member', 403],
    ['an operator (read-only)', 'operator', 403],
    ['an anonymous caller', undefined, 401],
  ] as const)('refuses %s', async (_, who, status) => {
    // The member names the tenant of its own token: grants are for admins only all the same.
    const tenantId = who === 'member' ? memberTenant : await tenant();
    const before = await balance(tenantId);
    const token = who === undefined ? undefined : tokens[who];
    const response = await grantAs(token, {
      tenantId,
      amountMicro: '100',
      reason: 'x',
      grantId: `refused-${who}`,
    });
    expect(response.status).toBe(status);
    expect(await balance(tenantId)).toEqual(before);
    expect(await rows(`refused-${who}`)).toHaveLength(0);
  });
});

describe('when the store is down', () => {
  it('a frozen store answers 503 store_unavailable; a retry with the same grantId applies exactly once', async () => {
    const tenantId = await tenant();
    const input = { tenantId, amountMicro: '3000000', reason: 'during a freeze', grantId: 'frozen-grant' };
    redis.process.kill('SIGSTOP');
    let during: Awaited<ReturnType<typeof grant>>;
    try {
      during = await grant(input);
    } finally {
      redis.process.kill('SIGCONT');
    }
    expect(during.status).toBe(503);
    expect(during.body.error?.data).toMatchObject({ appCode: 'store_unavailable', httpStatus: 503 });
    // The row is kept: it is what a retry (or a repair) re-applies from.
    expect(await rows('frozen-grant')).toHaveLength(1);

    await waitForStore(tenantId);
    // The timed-out command may have reached Redis after the freeze: either way, once.
    const retried = await grant(input);
    expect(retried.status).toBe(200);
    expect(data<Grant>(retried)).toMatchObject({ creditedMicro: '3000000', availableMicro: '3000000' });
    expect(data<Grant>(await grant(input))).toMatchObject({ creditedMicro: '3000000', alreadyApplied: true });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '3000000' });
    expect(await rows('frozen-grant')).toHaveLength(1);
  });

  it('a stopped store answers 503; after it is back, the retry credits the kept row once', async () => {
    const tenantId = await tenant();
    const input = { tenantId, amountMicro: '4000000', reason: 'during an outage', grantId: 'outage-grant' };
    const { port } = redis;
    await redis.stop();
    const during = await grant(input);
    expect(during.status).toBe(503);
    expect(during.body.error?.data).toMatchObject({ appCode: 'store_unavailable' });
    expect(await rows('outage-grant')).toHaveLength(1);

    // A fresh Redis on the same port (no persistence): the credit never reached the old one, but
    // the book holds the grant since its row was committed, and the balance is rebuilt from it.
    redis = await startRedisServer({ port });
    await waitForStore(tenantId);
    const retried = data<Grant>(await grant(input));
    expect(retried).toMatchObject({ creditedMicro: '4000000', alreadyApplied: true });
    const again = data<Grant>(await grant(input));
    expect(again).toMatchObject({ creditedMicro: '4000000', alreadyApplied: true });
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '4000000' });
    expect(await rows('outage-grant')).toHaveLength(1);
  });
});

async function waitForStore(tenantId: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await harness.services.store.snapshot(tenantId);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
