import { randomBytes } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { delay, HttpResponse, http } from 'msw';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type CryptoPaymentRow,
  creditGrants,
  cryptoPayments,
  journalEntries,
  webhookEvents,
} from '../../db/schema/index.js';
import { grantCredits } from '../../src/billing/credits.js';
import type { Clock } from '../../src/clock.js';
import { setFlag } from '../../src/flags/admin-flags.js';
import { newId } from '../../src/ids.js';
import type { Job } from '../../src/jobs/job.js';
import { ENGINE_OWED_GRACE_MS, paymentCreditsJob } from '../../src/jobs/payment-credits.js';
import {
  BACKOFF_MAX_MS,
  backoffDelayMs,
  paymentReconciliationJob,
  RECONCILE_AFTER_MS,
  RECONCILE_BATCH,
  RETRY_AFTER_MAX_MS,
} from '../../src/jobs/payment-reconciliation.js';
import { jobsState, runDueJobs } from '../../src/jobs/runner.js';
import { silentLogger } from '../../src/observability/logger.js';
import { openPayment } from '../../src/payments/reconcile.js';
import { applyStatusReport } from '../../src/payments/state-machine.js';
import { type PaymentStatus, statusRank } from '../../src/payments/status.js';
import { issueCallerToken, type Role } from '../../src/signing/tokens.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { redisStore, type Store } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork } from '../support/msw.js';
import { insertPayment } from '../support/payments.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';
import { data, trpc } from '../support/trpc.js';

/**
 * Payment reconciliation (issue 15): the job that reads payments back from NOWPayments when their
 * IPNs went missing, the job that brings minted credits to the engine after a store outage, and
 * admin.payments.stuck / reconcile. NOWPayments is mocked with msw; PostgreSQL and Redis are real.
 * The clock is the test's, so "older than 15 min" and the backoff are tested without waiting.
 */

const API = 'https://api.nowpayments.test/v1';
const API_KEY = 'np-test-key';
const HOLDER = 'recon-test';
const MINUTE = 60_000;

/** What the mocked provider answers for a provider payment id (404 for one it does not know). */
type Answer =
  | { json: Record<string, unknown> }
  | { status: number; retryAfterSeconds?: number }
  | { hang: true };
const answers = new Map<string, Answer>();
/** Provider payment ids, in the order GET /payment/:id was called. */
const calls: string[] = [];

const network = mockNetwork(
  http.get(`${API}/payment/:id`, async ({ params, request }) => {
    const id = String(params.id);
    calls.push(id);
    if (request.headers.get('x-api-key') !== API_KEY) {
      return HttpResponse.json({ message: 'Invalid api key' }, { status: 401 });
    }
    const answer = answers.get(id);
    if (answer === undefined) return HttpResponse.json({ message: 'Payment not found' }, { status: 404 });
    if ('hang' in answer) await delay('infinite');
    if ('json' in answer) return HttpResponse.json(answer.json);
    if ('status' in answer) {
      return new HttpResponse(null, {
        status: answer.status,
        headers:
          answer.retryAfterSeconds === undefined ? {} : { 'retry-after': String(answer.retryAfterSeconds) },
      });
    }
    return HttpResponse.error();
  }),
);

/** The test's clock: starts now, moves only forward, when the test says. */
function manualClock(startMs: number): Clock & { advance(ms: number): void } {
  let now = startMs;
  return {
    now: () => now,
    advance: (ms) => {
      now += ms;
    },
  };
}
const clock = manualClock(Date.now());

// The real Redis store, whose `credit` can be made to fail as a dropped connection would (the
// outage the payment-credits job exists for: Redis keeps its data but misses one credit).
const keyPrefix = `sgtest:${randomBytes(6).toString('hex')}:`;
let creditDown = false;
function storeWithFailingCredit(): Store {
  const real = redisStore({ url: inject('redisUrl'), keyPrefix, log: silentLogger() });
  return {
    ...real,
    credit: (input) =>
      creditDown
        ? Promise.reject(new StoreUnavailable({ cause: new Error('connection lost') }))
        : real.credit(input),
  };
}

let harness: Harness;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  harness = await createHarness({
    clock,
    store: storeWithFailingCredit(),
    // A provider that hangs is given up on after 300 ms here (10 s in production).
    config: { nowpaymentsApiKey: API_KEY, nowpaymentsApiUrl: API, nowpaymentsTimeoutMs: 300 },
  });
  const issue = async (role: Role, subject: string, tenantId?: string) =>
    (
      await issueCallerToken(harness.services, {
        role,
        subject,
        ttlSeconds: 86_400,
        ...(tenantId === undefined ? {} : { tenantId }),
      })
    ).token;
  const memberTenant = await tenant();
  tokens.admin = await issue('admin', 'alice');
  tokens.operator = await issue('operator', 'olga');
  tokens.member = await issue('member', 'mia', memberTenant);
});

afterAll(async () => {
  network.close();
  await harness.close();
  await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
});

afterEach(async () => {
  // Each test sees only its own open payments: the ones before are ended here.
  await harness.db
    .update(cryptoPayments)
    .set({ status: 'expired', statusRank: statusRank('expired') })
    .where(openPayment);
  answers.clear();
  calls.length = 0;
  creditDown = false;
});

let tenants = 0;
async function tenant(): Promise<string> {
  tenants += 1;
  return (await createTenant(harness.services, { name: `Payer ${tenants}`, tier: 4 })).id;
}

/** A tenant with 1,000,000 µ, so its balance is in the store (a later raise is the engine's, not a rebuild). */
async function fundedTenant(): Promise<string> {
  const tenantId = await tenant();
  await grantCredits(harness.services, {
    tenantId,
    amountMicro: 1_000_000n,
    reason: 'opening balance',
    grantedBy: 'test',
  });
  return tenantId;
}

let sequence = 0;
/**
 * A starter-pack payment opened `ageMs` ago, as invoice creation and its first IPN leave it: the
 * provider payment id and `last_ipn_updated_at` from that IPN (a minute after opening), unless
 * `providerPaymentId: null` (no IPN ever came).
 */
async function payment(
  tenantId: string,
  options: { ageMs: number; status?: PaymentStatus; providerPaymentId?: null },
): Promise<CryptoPaymentRow & { providerPaymentId: string }> {
  sequence += 1;
  const opened = await insertPayment(harness.services, {
    tenantId,
    pack: 'starter',
    status: options.status ?? 'waiting',
    createdAt: new Date(clock.now() - options.ageMs),
    ...(options.providerPaymentId === null ? {} : { providerPaymentId: String(4_400_000_000 + sequence) }),
  });
  if (opened.providerPaymentId === null) return opened as CryptoPaymentRow & { providerPaymentId: string };
  const ipnAt = new Date(opened.createdAt.getTime() + MINUTE);
  const [row] = await harness.db
    .update(cryptoPayments)
    .set({ lastIpnUpdatedAt: ipnAt.getTime(), updatedAt: ipnAt })
    .where(eq(cryptoPayments.id, opened.id))
    .returning();
  if (row === undefined) throw new Error('payment not updated');
  return row as CryptoPaymentRow & { providerPaymentId: string };
}

/** The provider's GET /payment/:id body for `row` at `status`, updated `updatedAtMs`. */
function providerSays(
  row: { id: string; providerPaymentId: string },
  status: string,
  updatedAtMs = clock.now() - MINUTE,
): Answer {
  return {
    json: {
      payment_id: Number(row.providerPaymentId),
      invoice_id: 5_500_000_000,
      order_id: row.id,
      payment_status: status,
      pay_address: 'bc1qexample',
      price_amount: 5,
      price_currency: 'usd',
      pay_amount: 0.0001,
      actually_paid: status === 'finished' ? 0.0001 : 0,
      pay_currency: 'btc',
      created_at: new Date(updatedAtMs - 10 * MINUTE).toISOString(),
      updated_at: new Date(updatedAtMs).toISOString(),
    },
  };
}

async function row(id: string): Promise<CryptoPaymentRow> {
  const [found] = await harness.db.select().from(cryptoPayments).where(eq(cryptoPayments.id, id));
  if (found === undefined) throw new Error(`no payment ${id}`);
  return found;
}

const events = (paymentId: string) =>
  harness.db.select().from(webhookEvents).where(eq(webhookEvents.paymentId, paymentId));

async function balance(tenantId: string) {
  return data<{ creditedMicro: string; availableMicro: string }>(
    await trpc(harness, harness.adminToken, 'billing.balance', { tenantId }),
  );
}

/**
 * One pass of the real runner over `jobs` at the test clock's now, as this holder (the same one
 * each time, so it renews its own leases); fails the test when a job failed or did not run.
 */
async function run(jobs: Job[], on: Harness = harness): Promise<void> {
  const before = on.logs.length;
  await runDueJobs(on.services, jobs, clock.now(), jobsState(HOLDER));
  const lines = on.logs.slice(before);
  expect(lines.filter((line) => line.msg === 'job failed' || line.msg?.startsWith('job lease lost'))).toEqual(
    [],
  );
  for (const job of jobs) {
    expect(lines.some((line) => line.msg === 'job run' && line.job === job.name)).toBe(true);
  }
}

const reconciliation = (options: { random?: () => number } = {}) =>
  paymentReconciliationJob({ intervalMs: 300_000, ...options });

describe('the payment-reconciliation job', () => {
  it('mints once a payment stuck 20 min that the provider reports finished: grant, payment entry, balance, status', async () => {
    const tenantId = await fundedTenant();
    const stuck = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(stuck.providerPaymentId, providerSays(stuck, 'finished'));
    const job = reconciliation();

    await run([job]);

    expect(calls).toEqual([stuck.providerPaymentId]);
    const after = await row(stuck.id);
    expect(after).toMatchObject({ status: 'finished', actuallyPaid: '0.0001', payCurrency: 'btc' });
    expect(after.mintedAt).not.toBeNull();
    expect(after.engineCreditedAt).not.toBeNull();
    const grants = await harness.db.select().from(creditGrants).where(eq(creditGrants.id, stuck.id));
    expect(grants).toMatchObject([{ tenantId, amountMicro: 5_000_000n, grantedBy: 'nowpayments' }]);
    const entries = await harness.db
      .select()
      .from(journalEntries)
      .where(and(eq(journalEntries.kind, 'payment'), eq(journalEntries.reference, stuck.id)));
    expect(entries).toHaveLength(1);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000', availableMicro: '6000000' });
    expect(await events(stuck.id)).toMatchObject([
      { outcome: 'processed', status: 'finished', requestId: `job:payment-reconciliation:${HOLDER}` },
    ]);

    // The next cycle: a finished payment is not asked about again, and nothing is minted twice.
    clock.advance(5 * MINUTE);
    await run([job]);
    expect(calls).toEqual([stuck.providerPaymentId]);
    expect(await harness.db.select().from(creditGrants).where(eq(creditGrants.id, stuck.id))).toHaveLength(1);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000' });
    expect(await events(stuck.id)).toHaveLength(1);
  });

  it('does not ask about a payment younger than 15 min; once it is older, it does', async () => {
    const tenantId = await tenant();
    const young = await payment(tenantId, { ageMs: 10 * MINUTE });
    answers.set(young.providerPaymentId, providerSays(young, 'confirming'));
    const job = reconciliation();

    await run([job]);
    expect(calls).toEqual([]);
    expect((await row(young.id)).status).toBe('waiting');

    clock.advance(RECONCILE_AFTER_MS - 10 * MINUTE + 1_000);
    await run([job]);
    expect(calls).toEqual([young.providerPaymentId]);
    expect((await row(young.id)).status).toBe('confirming');
  });

  it('never asks about a payment no IPN reached (no provider payment id): the API key cannot read it', async () => {
    const tenantId = await tenant();
    const unknown = await payment(tenantId, { ageMs: 2 * 60 * MINUTE, providerPaymentId: null });

    await run([reconciliation()]);

    expect(calls).toEqual([]);
    expect(await row(unknown.id)).toMatchObject({ status: 'waiting', providerPaymentId: null });
    expect(await events(unknown.id)).toEqual([]);
  });

  it('asks about every open status (confirming, partially_paid, confirmed, sending) and none that ended', async () => {
    const tenantId = await tenant();
    // Oldest first: a second apart.
    const open = [];
    for (const [i, status] of (['confirming', 'partially_paid', 'confirmed', 'sending'] as const).entries()) {
      open.push(await payment(tenantId, { ageMs: 30 * MINUTE - i * 1_000, status }));
    }
    const ended = [];
    for (const status of ['finished', 'failed', 'expired', 'refunded'] as const) {
      ended.push(await payment(tenantId, { ageMs: 20 * MINUTE, status }));
    }
    for (const each of [...open, ...ended]) answers.set(each.providerPaymentId, providerSays(each, 'failed'));

    await run([reconciliation()]);

    expect(calls).toEqual(open.map((each) => each.providerPaymentId));
    for (const each of open) expect((await row(each.id)).status).toBe('failed');
  });

  it('records nothing when the provider reports what the payment already is', async () => {
    const tenantId = await tenant();
    const quiet = await payment(tenantId, { ageMs: 20 * MINUTE });
    // The status and updated_at of the IPN that was applied.
    answers.set(quiet.providerPaymentId, providerSays(quiet, 'waiting', quiet.lastIpnUpdatedAt ?? 0));

    const job = reconciliation();
    await run([job]);

    expect(calls).toEqual([quiet.providerPaymentId]);
    expect(await row(quiet.id)).toEqual(quiet);
    expect(await events(quiet.id)).toEqual([]);

    // The same status without updated_at (which the machine orders by rank alone): still no news.
    const { updated_at: _, ...undated } = (
      providerSays(quiet, 'waiting') as { json: Record<string, unknown> }
    ).json;
    answers.set(quiet.providerPaymentId, { json: undated });
    clock.advance(5 * MINUTE);
    await run([job]);
    expect(calls).toEqual([quiet.providerPaymentId, quiet.providerPaymentId]);
    expect(await row(quiet.id)).toEqual(quiet);
    expect(await events(quiet.id)).toEqual([]);
  });

  it('does not apply an answer that names another order', async () => {
    const tenantId = await tenant();
    const mine = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(mine.providerPaymentId, providerSays({ ...mine, id: newId('pay') }, 'finished'));

    await run([reconciliation()]);

    expect(calls).toEqual([mine.providerPaymentId]);
    expect(await row(mine.id)).toEqual(mine);
    expect(await events(mine.id)).toEqual([]);
  });

  it('takes at most a batch a run, oldest first, and the next run goes on from there', async () => {
    const tenantId = await tenant();
    const rows = [];
    for (let i = 0; i < RECONCILE_BATCH + 5; i += 1) {
      const each = await payment(tenantId, { ageMs: 3 * 60 * MINUTE - i * 1_000 });
      answers.set(each.providerPaymentId, providerSays(each, 'waiting', each.lastIpnUpdatedAt ?? 0));
      rows.push(each);
    }
    const ids = rows.map((each) => each.providerPaymentId);
    const job = reconciliation();

    await run([job]);
    expect(calls).toEqual(ids.slice(0, RECONCILE_BATCH));
    calls.length = 0;
    await run([job]);
    expect(calls).toEqual(ids.slice(RECONCILE_BATCH));
    calls.length = 0;
    // Past the youngest: from the oldest again.
    await run([job]);
    expect(calls).toEqual(ids.slice(0, RECONCILE_BATCH));
  }, 60_000);

  it('on 429 stops the run and backs off 30 s, 60 s, … up to 5 min; no call within the backoff', async () => {
    const tenantId = await tenant();
    const first = await payment(tenantId, { ageMs: 40 * MINUTE });
    const second = await payment(tenantId, { ageMs: 30 * MINUTE });
    answers.set(first.providerPaymentId, { status: 429 });
    answers.set(second.providerPaymentId, { status: 429 });
    // No jitter: the delays are exact.
    const job = reconciliation({ random: () => 0 });

    const delays: number[] = [];
    for (let attempt = 0; attempt < 6; attempt += 1) {
      calls.length = 0;
      await run([job]);
      // The run stopped at the first 429: the second payment was not asked about.
      expect(calls).toEqual([first.providerPaymentId]);
      const delayMs = job.backoff.untilMs - clock.now();
      delays.push(delayMs);
      // Just before the backoff ends, a run calls nothing.
      calls.length = 0;
      clock.advance(delayMs - 1);
      await run([job]);
      expect(calls).toEqual([]);
      clock.advance(1);
    }
    expect(delays).toEqual([30_000, 60_000, 120_000, 240_000, 300_000, 300_000]);
    expect(job.backoff.failures).toBe(6);
    for (const each of [first, second]) {
      expect(await row(each.id)).toEqual(each);
      expect(await events(each.id)).toEqual([]);
    }

    // The provider answers again: both are read, and the backoff is forgotten.
    answers.set(first.providerPaymentId, providerSays(first, 'confirming'));
    answers.set(second.providerPaymentId, providerSays(second, 'confirming'));
    calls.length = 0;
    await run([job]);
    expect(calls).toEqual([first.providerPaymentId, second.providerPaymentId]);
    expect(job.backoff.failures).toBe(0);
    expect((await row(second.id)).status).toBe('confirming');
  });

  it('honours a Retry-After longer than its own backoff', async () => {
    const tenantId = await tenant();
    const limited = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(limited.providerPaymentId, { status: 429, retryAfterSeconds: 600 });
    const job = reconciliation({ random: () => 0 });

    await run([job]);

    expect(job.backoff.untilMs - clock.now()).toBe(600_000);
    calls.length = 0;
    clock.advance(BACKOFF_MAX_MS);
    await run([job]);
    expect(calls).toEqual([]);
  });

  it('leaves a payment untouched when the provider answers 5xx, and tries again the next run', async () => {
    const tenantId = await tenant();
    const down = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(down.providerPaymentId, { status: 502 });
    const job = reconciliation();

    await run([job]);

    expect(calls).toEqual([down.providerPaymentId]);
    expect(await row(down.id)).toEqual(down);
    expect(await events(down.id)).toEqual([]);
    // Not a rate limit: no backoff.
    expect(job.backoff.untilMs).toBe(0);

    answers.set(down.providerPaymentId, providerSays(down, 'confirming'));
    clock.advance(5 * MINUTE);
    await run([job]);
    expect(calls).toEqual([down.providerPaymentId, down.providerPaymentId]);
    expect((await row(down.id)).status).toBe('confirming');
  });

  it('leaves a payment untouched when the provider times out, and tries again the next run', async () => {
    const tenantId = await tenant();
    const slow = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(slow.providerPaymentId, { hang: true });
    const job = reconciliation();

    // The client gives up after its timeout (300 ms in this file).
    await run([job]);

    expect(calls).toEqual([slow.providerPaymentId]);
    expect(await row(slow.id)).toEqual(slow);
    expect(await events(slow.id)).toEqual([]);
    expect(
      harness.logs.some(
        (line) =>
          line.msg?.startsWith('payment not reconciled') &&
          line.paymentId === slow.id &&
          line.kind === 'unavailable',
      ),
    ).toBe(true);

    answers.set(slow.providerPaymentId, providerSays(slow, 'finished'));
    clock.advance(5 * MINUTE);
    await run([job]);
    expect((await row(slow.id)).status).toBe('finished');
  }, 30_000);

  it('after three unavailable answers in a row ends the run (the provider is down); the next run starts with them', async () => {
    const tenantId = await tenant();
    const rows = [];
    for (let i = 0; i < 5; i += 1) {
      const each = await payment(tenantId, { ageMs: 60 * MINUTE - i * 1_000 });
      answers.set(each.providerPaymentId, { status: 503 });
      rows.push(each);
    }

    const job = reconciliation();

    await run([job]);

    expect(calls).toEqual(rows.slice(0, 3).map((each) => each.providerPaymentId));
    for (const each of rows) expect(await row(each.id)).toEqual(each);

    // Back: the next run starts with the payments the failed run could not read.
    for (const each of rows) answers.set(each.providerPaymentId, providerSays(each, 'confirming'));
    calls.length = 0;
    clock.advance(5 * MINUTE);
    await run([job]);
    expect(calls).toEqual(rows.map((each) => each.providerPaymentId));
    for (const each of rows) expect((await row(each.id)).status).toBe('confirming');
  });

  it('does nothing while payments are off or have no API key', async () => {
    const tenantId = await tenant();
    const stuck = await payment(tenantId, { ageMs: 20 * MINUTE });
    answers.set(stuck.providerPaymentId, providerSays(stuck, 'finished'));
    const off = await createHarness({
      shareWith: harness,
      clock,
      config: { payments: 'off', nowpaymentsApiKey: API_KEY, nowpaymentsApiUrl: API },
    });
    const keyless = await createHarness({ shareWith: harness, clock, config: { nowpaymentsApiUrl: API } });
    try {
      await run([reconciliation()], off);
      await run([reconciliation()], keyless);
    } finally {
      await off.close();
      await keyless.close();
    }
    expect(calls).toEqual([]);
    expect(await row(stuck.id)).toEqual(stuck);
  });
});

describe('the backoff delay', () => {
  it('stays within a fifth below its step, grows each step, and is capped at 5 min; Retry-After up to an hour', () => {
    for (const random of [0, 0.25, 0.5, 0.999]) {
      const delays = [1, 2, 3, 4, 5, 6, 7].map((failures) => backoffDelayMs(failures, random));
      const steps = [30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000];
      delays.forEach((delayMs, i) => {
        const step = steps[i] ?? 0;
        expect(delayMs).toBeGreaterThanOrEqual(step * 0.8);
        expect(delayMs).toBeLessThanOrEqual(step);
      });
      for (let i = 1; i < 4; i += 1) expect(delays[i]).toBeGreaterThan(delays[i - 1] ?? 0);
    }
    expect(backoffDelayMs(1, 0.5, 90_000)).toBe(90_000);
    expect(backoffDelayMs(4, 0, 90_000)).toBe(240_000);
    expect(backoffDelayMs(1, 0, 86_400_000)).toBe(RETRY_AFTER_MAX_MS);
  });
});

describe('the payment-credits job', () => {
  it('credits once a mint the engine missed (the store failed after the commit); a second run changes nothing', async () => {
    const tenantId = await fundedTenant();
    const paid = await payment(tenantId, { ageMs: 20 * MINUTE, status: 'sending' });
    // The IPN of `finished` arrives while the store drops the credit: the book has it, the engine not.
    creditDown = true;
    const outcome = await applyStatusReport(
      harness.services,
      {
        orderId: paid.id,
        providerPaymentId: paid.providerPaymentId,
        status: 'finished',
        updatedAtMs: clock.now(),
      },
      { requestId: 'ipn-during-outage' },
    );
    creditDown = false;
    expect(outcome).toMatchObject({ status: 'processed', minted: true });
    const minted = await row(paid.id);
    expect(minted.mintedAt).not.toBeNull();
    expect(minted.engineCreditedAt).toBeNull();
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '1000000' });

    // Within the grace left to the request that minted it, the job leaves it.
    await run([paymentCreditsJob]);
    expect((await row(paid.id)).engineCreditedAt).toBeNull();

    clock.advance(ENGINE_OWED_GRACE_MS + 1_000);
    await run([paymentCreditsJob]);
    const credited = await row(paid.id);
    expect(credited.engineCreditedAt).not.toBeNull();
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000', availableMicro: '6000000' });

    clock.advance(10_000);
    await run([paymentCreditsJob]);
    expect(await row(paid.id)).toEqual(credited);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000' });
    expect(
      harness.logs.filter((line) => line.msg === 'payment credited' && line.paymentId === paid.id),
    ).toHaveLength(1);
  });
});

describe('admin.payments.stuck', () => {
  it('lists open payments older than 30 min and every partially_paid one, oldest first, money as strings', async () => {
    const tenantId = await tenant();
    const old = await payment(tenantId, { ageMs: 45 * MINUTE });
    const noIpn = await payment(tenantId, {
      ageMs: 40 * MINUTE,
      status: 'confirming',
      providerPaymentId: null,
    });
    const partial = await payment(tenantId, { ageMs: 5 * MINUTE, status: 'partially_paid' });
    await payment(tenantId, { ageMs: 10 * MINUTE });
    await payment(tenantId, { ageMs: 2 * 60 * MINUTE, status: 'finished' });
    await payment(tenantId, { ageMs: 2 * 60 * MINUTE, status: 'failed' });
    // Paid after it had expired: the provider's `finished` is recorded and ignored, never minted.
    const paidLate = await payment(tenantId, { ageMs: 3 * 60 * MINUTE, status: 'expired' });
    const late = await applyStatusReport(harness.services, {
      orderId: paidLate.id,
      providerPaymentId: paidLate.providerPaymentId,
      status: 'finished',
      updatedAtMs: clock.now(),
    });
    expect(late).toMatchObject({ status: 'ignored', reason: 'after_terminal' });

    const response = await trpc(harness, tokens.operator, 'admin.payments.stuck');

    expect(response.status).toBe(200);
    const listed = data<Record<string, unknown>[]>(response);
    // Reported on by the provider first (oldest first), then invoices no IPN ever reached.
    expect(listed.map((each) => each.paymentId)).toEqual([paidLate.id, old.id, partial.id, noIpn.id]);
    expect(harness.logs.some((line) => line.paymentId === paidLate.id && line.level === 'error')).toBe(true);
    listed.shift();
    expect(listed[0]).toEqual({
      paymentId: old.id,
      tenantId,
      pack: 'starter',
      priceAmount: '5',
      priceCurrency: 'usd',
      creditsMicro: '5000000',
      status: 'waiting',
      actuallyPaid: null,
      payCurrency: null,
      providerInvoiceId: old.providerInvoiceId,
      invoiceUrl: null,
      providerPaymentId: old.providerPaymentId,
      createdAt: old.createdAt.toISOString(),
      updatedAt: old.updatedAt.toISOString(),
      mintedAt: null,
      refundedMicro: null,
      refundShortfallMicro: null,
    });
    expect(listed[1]).toMatchObject({ status: 'partially_paid' });
    expect(listed[2]).toMatchObject({ status: 'confirming', providerPaymentId: null });
  });

  it.each([
    ['an admin', 'admin', 200],
    ['an operator', 'operator', 200],
    ['a member', 'member', 403],
    ['an anonymous caller', undefined, 401],
  ] as const)('answers %s with %i', async (_, who, status) => {
    const response = await trpc(harness, who === undefined ? undefined : tokens[who], 'admin.payments.stuck');
    expect(response.status).toBe(status);
  });
});

describe('admin.payments.reconcile', () => {
  const reconcile = async (token: string | undefined, input: unknown, requestId?: string) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (requestId !== undefined) headers['x-request-id'] = requestId;
    const response = await harness.request('/trpc/admin.payments.reconcile', {
      method: 'POST',
      headers,
      body: JSON.stringify(input),
    });
    return {
      status: response.status,
      body: (await response.json()) as {
        result?: { data: Record<string, unknown> };
        error?: { message: string; data: Record<string, unknown> };
      },
    };
  };

  it('applies what the provider says through the state machine and records the admin on the event', async () => {
    const tenantId = await fundedTenant();
    // Young: the job would not touch it yet; the admin may.
    const paid = await payment(tenantId, { ageMs: 2 * MINUTE });
    answers.set(paid.providerPaymentId, providerSays(paid, 'finished', clock.now()));

    const response = await reconcile(tokens.admin, { paymentId: paid.id }, 'support-ticket-42');

    expect(response.status).toBe(200);
    expect(response.body.result?.data).toEqual({
      status: 'processed',
      paymentId: paid.id,
      paymentStatus: 'finished',
      providerStatus: 'finished',
      minted: true,
    });
    expect(calls).toEqual([paid.providerPaymentId]);
    expect(await events(paid.id)).toMatchObject([
      { outcome: 'processed', status: 'finished', requestId: 'admin:alice:support-ticket-42' },
    ]);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000' });

    // Again: the same report is a duplicate, recorded with this call's request id; nothing minted.
    const again = await reconcile(tokens.admin, { paymentId: paid.id }, 'support-ticket-43');
    expect(again.body.result?.data).toMatchObject({ status: 'duplicate', paymentStatus: 'finished' });
    expect((await events(paid.id)).map((event) => [event.outcome, event.requestId])).toEqual([
      ['processed', 'admin:alice:support-ticket-42'],
      ['duplicate', 'admin:alice:support-ticket-43'],
    ]);
    expect(await balance(tenantId)).toMatchObject({ creditedMicro: '6000000' });
  });

  it('answers 404 for an unknown payment and 400 for something that is not a payment id', async () => {
    expect((await reconcile(tokens.admin, { paymentId: newId('pay') })).status).toBe(404);
    expect((await reconcile(tokens.admin, { paymentId: 'pay_../../x' })).status).toBe(400);
    expect((await reconcile(tokens.admin, {})).status).toBe(400);
    expect(calls).toEqual([]);
  });

  it('answers 503 feature_disabled while the payments flag is off, without calling the provider', async () => {
    const tenantId = await tenant();
    const open = await payment(tenantId, { ageMs: 60 * MINUTE });
    answers.set(open.providerPaymentId, providerSays(open, 'finished'));
    await setFlag(harness.services, { flag: 'payments', enabled: false });
    try {
      const response = await reconcile(tokens.admin, { paymentId: open.id });
      expect(response.status).toBe(503);
      expect(response.body.error?.data).toMatchObject({ appCode: 'feature_disabled' });
      expect(calls).toEqual([]);
      expect(await row(open.id)).toEqual(open);
    } finally {
      await setFlag(harness.services, { flag: 'payments', enabled: null });
    }
  });

  it('answers 404 naming the provider when NOWPayments does not know the payment, and changes nothing', async () => {
    const tenantId = await tenant();
    const unknown = await payment(tenantId, { ageMs: 60 * MINUTE });
    answers.delete(unknown.providerPaymentId);

    const response = await reconcile(tokens.admin, { paymentId: unknown.id });

    expect(response.status).toBe(404);
    expect(response.body.error?.message).toContain('NOWPayments does not know');
    expect(await row(unknown.id)).toEqual(unknown);
  });

  it('answers 409 for a payment without a provider payment id, saying why', async () => {
    const tenantId = await tenant();
    const noIpn = await payment(tenantId, { ageMs: 60 * MINUTE, providerPaymentId: null });

    const response = await reconcile(tokens.admin, { paymentId: noIpn.id });

    expect(response.status).toBe(409);
    expect(response.body.error?.message).toContain('no provider payment id');
    expect(calls).toEqual([]);
    expect(await row(noIpn.id)).toEqual(noIpn);
  });

  it.each([
    ['answers 5xx', { status: 500 }],
    ['rate limits', { status: 429, retryAfterSeconds: 30 }],
  ] as const)(
    'answers 503 provider_unavailable when the provider %s, and changes nothing',
    async (_, answer) => {
      const tenantId = await tenant();
      const down = await payment(tenantId, { ageMs: 60 * MINUTE });
      answers.set(down.providerPaymentId, answer);

      const response = await reconcile(tokens.admin, { paymentId: down.id });

      expect(response.status).toBe(503);
      expect(response.body.error?.data).toMatchObject({ appCode: 'provider_unavailable' });
      expect(await row(down.id)).toEqual(down);
      expect(await events(down.id)).toEqual([]);
    },
  );

  it.each([
    ['a member', 'member', 403],
    ['an operator (read-only)', 'operator', 403],
    ['an anonymous caller', undefined, 401],
  ] as const)('refuses %s before asking the provider', async (_, who, status) => {
    const tenantId = await tenant();
    const stuck = await payment(tenantId, { ageMs: 60 * MINUTE });
    answers.set(stuck.providerPaymentId, providerSays(stuck, 'finished'));

    const response = await reconcile(who === undefined ? undefined : tokens[who], { paymentId: stuck.id });

    expect(response.status).toBe(status);
    expect(calls).toEqual([]);
    expect(await row(stuck.id)).toEqual(stuck);
  });
});
