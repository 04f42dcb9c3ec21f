import { and, eq, sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { creditGrants, cryptoPayments, journalEntries, webhookEvents } from '../../db/schema/index.js';
import { silentLogger } from '../../src/observability/logger.js';
import { applyEngineChanges } from '../../src/payments/engine.js';
import { ipnReport } from '../../src/payments/ipn.js';
import { applyStatusReport } from '../../src/payments/state-machine.js';
import { redisStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { insertPayment, ipnBody, postIpn, signBody } from '../support/payments.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { data, trpc } from '../support/trpc.js';

/**
 * Payments when parts fail: Redis stopped while a payment mints, the database connection killed
 * inside the mint's transaction, and floods of webhooks — on a Redis of this file's own.
 */
const SECRET = 'ipn-secret-faults-0123456789';

let redis: RedisServer;
let harness: Harness;

beforeAll(async () => {
  redis = await startRedisServer();
  harness = await createHarness({
    store: redisStore({ url: redis.url, log: silentLogger() }),
    config: { nowpaymentsIpnSecrets: [SECRET] },
  });
});
afterAll(async () => {
  await harness.close();
  await redis.stop();
});

async function newPayment(pack: 'starter' | 'standard' = 'standard') {
  const tenantId = (await createTenant(harness.services, { name: 'Faults', tier: 4 })).id;
  return insertPayment(harness.services, { tenantId, pack });
}

async function balance(tenantId: string) {
  return data<{ creditedMicro: string; availableMicro: string }>(
    await trpc(harness, harness.adminToken, 'billing.balance', { tenantId }),
  );
}

async function minted(paymentId: string) {
  const entries = await harness.db
    .select()
    .from(journalEntries)
    .where(and(eq(journalEntries.kind, 'payment'), eq(journalEntries.reference, paymentId)));
  const grants = await harness.db.select().from(creditGrants).where(eq(creditGrants.id, paymentId));
  const [row] = await harness.db.select().from(cryptoPayments).where(eq(cryptoPayments.id, paymentId));
  return { entries: entries.length, grants: grants.length, row };
}

/**
 * After a transaction that died: no status change, grant, entry or event; then the provider's
 * retry (the webhook answered 5xx) commits, once.
 */
async function expectNothingThenOneMintOnRetry(payment: { id: string }, body: Record<string, unknown>) {
  const after = await minted(payment.id);
  expect([after.entries, after.grants, after.row?.status, after.row?.mintedAt]).toEqual([
    0,
    0,
    'waiting',
    null,
  ]);
  const recorded = await harness.db
    .select()
    .from(webhookEvents)
    .where(eq(webhookEvents.paymentId, payment.id));
  expect(recorded).toEqual([]);
  const retry = await postIpn(harness, body, signBody(SECRET, body));
  expect(await retry.json()).toEqual({ status: 'processed' });
  const done = await minted(payment.id);
  expect([done.entries, done.grants, done.row?.status]).toEqual([1, 1, 'finished']);
}

describe('payments when parts fail', () => {
  it('Redis stopped during a mint: committed in PostgreSQL, the live balance right once Redis is back, credited once', async () => {
    const payment = await newPayment();
    const body = ipnBody(payment, 'finished', 10_000);
    const parsed = ipnReport(body);
    if ('error' in parsed) throw new Error(parsed.error);
    // Redis stops inside the mint's transaction, after the grant and the entry, before the commit.
    const outcome = await applyStatusReport(harness.services, parsed.report, {
      beforeCommit: () => redis.stop(),
    });
    expect(outcome).toMatchObject({ status: 'processed', minted: true });
    const during = await minted(payment.id);
    expect([during.entries, during.grants, during.row?.status]).toEqual([1, 1, 'finished']);
    expect(during.row?.engineCreditedAt).toBeNull();

    redis = await startRedisServer({ port: redis.port });
    // The restarted Redis is empty: the balance is rebuilt from the book, which holds the mint.
    expect(await balance(payment.tenantId)).toMatchObject({
      creditedMicro: '10500000',
      availableMicro: '10500000',
    });
    // The engine step the payment-credits job retries: the grant id is already applied.
    await applyEngineChanges(harness.services, payment.id);
    expect((await minted(payment.id)).row?.engineCreditedAt).not.toBeNull();
    expect(await balance(payment.tenantId)).toMatchObject({ creditedMicro: '10500000' });
    // The provider's retry of the same IPN changes nothing.
    expect(await (await postIpn(harness, body, signBody(SECRET, body))).json()).toEqual({
      status: 'duplicate',
    });
    expect(await balance(payment.tenantId)).toMatchObject({ creditedMicro: '10500000' });
  });

  it('the database connection killed mid-mint: the status change and the entry both or neither; the retry mints once', async () => {
    const url = harness.shared.database.url;
    if (url === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const payment = await newPayment('starter');
    const body = ipnBody(payment, 'finished', 20_000);
    const parsed = ipnReport(body);
    if ('error' in parsed) throw new Error(parsed.error);

    const killer = postgres(url, { max: 1, onnotice: () => {} });
    try {
      let kill: Promise<boolean> | undefined;
      const attempt = applyStatusReport(harness.services, parsed.report, {
        // Inside the transaction, after the status change, the grant and the payment entry. The
        // transaction may fail as soon as its connection closes, before this hook returns: the
        // kill's own answer is awaited below.
        beforeCommit: async (tx) => {
          const [row] = (await tx.execute(sql`select pg_backend_pid() as pid`)) as unknown as {
            pid: number;
          }[];
          kill = killer`select pg_terminate_backend(${row?.pid ?? 0}) as done`.then(
            ([result]) => result?.done === true,
          );
          await kill;
        },
      });
      await expect(attempt).rejects.toThrow();
      expect(await kill).toBe(true);
    } finally {
      await killer.end();
    }
    await expectNothingThenOneMintOnRetry(payment, body);
    expect(await balance(payment.tenantId)).toMatchObject({ creditedMicro: '5000000' });
  });
});

describe('the webhook when the database fails', () => {
  it('answers 5xx when its connection is killed inside the transaction, records nothing, and the retry mints once', async () => {
    const url = harness.shared.database.url;
    if (url === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const payment = await newPayment('starter');
    const body = ipnBody(payment, 'finished', 40_000);
    const holder = postgres(url, { max: 1, onnotice: () => {} });
    const killer = postgres(url, { max: 1, onnotice: () => {} });
    try {
      // The test holds the payment's row, so the webhook's transaction waits on it inside PostgreSQL.
      const held = await holder.reserve();
      await held`begin`;
      await held`select id from crypto_payments where id = ${payment.id} for update`;
      const answer = postIpn(harness, body, signBody(SECRET, body));
      let waiting: { pid: number }[] = [];
      for (let tries = 0; waiting.length === 0 && tries < 200; tries += 1) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        waiting =
          await killer`select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`;
      }
      expect(waiting).toHaveLength(1);
      await killer`select pg_terminate_backend(${waiting[0]?.pid ?? 0})`;
      const response = await answer;
      expect(response.status).toBeGreaterThanOrEqual(500);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('internal_error');
      await held`rollback`;
      held.release();
    } finally {
      await holder.end();
      await killer.end();
    }
    await expectNothingThenOneMintOnRetry(payment, body);
  });
});

describe('webhook floods', () => {
  let limited: Harness;
  beforeAll(async () => {
    limited = await createHarness({
      shareWith: harness,
      limits: 'production',
      config: { ...harness.services.config, trustProxyHops: 0 },
    });
  });
  afterAll(async () => {
    await limited.close();
  });

  it('limits a flood from one socket however its X-Forwarded-For rotates (TRUST_PROXY_HOPS=0)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 110; i += 1) {
      // Each names another payment, so only the per-IP limit can stop them.
      const response = await limited.requestFrom('203.0.113.7', '/api/crypto/webhook', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': `198.51.100.${i % 250}` },
        body: JSON.stringify({ order_id: `pay_flood${i}`, payment_status: 'finished' }),
      });
      statuses.push(response.status);
      await response.body?.cancel();
    }
    expect(statuses.slice(0, 100).every((status) => status === 401)).toBe(true);
    expect(statuses.slice(100)).toEqual(Array(10).fill(429));
  });

  it('throttles one payment to 10 notifications an hour before any signature check', async () => {
    const payment = await newPayment();
    const forged = ipnBody(payment, 'finished', 30_000);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i += 1) {
      const response = await limited.requestFrom(`192.0.2.${i}`, '/api/crypto/webhook', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-nowpayments-sig': 'f'.repeat(128) },
        body: JSON.stringify(forged),
      });
      statuses.push(response.status);
      if (i === 11) {
        const answer = (await response.json()) as { error: { code: string; dimension: string } };
        expect(answer.error).toMatchObject({ code: 'rate_limited', dimension: 'payment' });
        expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
      } else {
        await response.body?.cancel();
      }
    }
    expect(statuses).toEqual([...Array(10).fill(401), 429, 429]);
    // Even the genuine IPN waits now: the provider retries it later (and reconciliation reads a
    // payment an earlier IPN named; one no IPN ever reached waits for the provider's retry).
    const genuine = await limited.requestFrom('192.0.2.99', '/api/crypto/webhook', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-nowpayments-sig': signBody(SECRET, forged) },
      body: JSON.stringify(forged),
    });
    expect(genuine.status).toBe(429);
    expect((await minted(payment.id)).row?.status).toBe('waiting');
  });
});
