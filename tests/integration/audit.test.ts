import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { and, asc, eq, type SQL, sql } from 'drizzle-orm';
import { HttpResponse, http } from 'msw';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type AuditEventRow,
  apiKeys,
  auditEvents,
  creditGrants,
  cryptoPayments,
  journalEntries,
  signingKeys,
  tenants,
  webhookEvents,
} from '../../db/schema/index.js';
import { PLATFORM_CHAIN, pseudonym } from '../../src/audit/audit.js';
import { issueCallerToken, type Role } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { spicegateCli } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { mockNetwork } from '../support/msw.js';
import { insertPayment } from '../support/payments.js';
import { serve } from '../support/serve.js';

/**
 * The audit trail (issue 16): every change an admin or member makes through the API leaves one
 * row in its own transaction; the chain verifies and names a row edited or removed by hand; the
 * database refuses UPDATE and DELETE; the JSONL export streams. NOWPayments is mocked with msw.
 */

const API = 'https://api.nowpayments.test/v1';
const API_KEY = 'np-audit-key';
// A subject that is an e-mail address: the trail must name its owner by a pseudonym only.
const ADMIN_SUBJECT = 'alice@example.com';

/** The provider: invoices are created unless `refuseInvoices`; GET /payment/:id answers `paymentAnswers`. */
let refuseInvoices = false;
let invoiceCalls = 0;
const paymentAnswers = new Map<string, Record<string, unknown>>();
const network = mockNetwork(
  http.post(`${API}/invoice`, () => {
    invoiceCalls += 1;
    if (refuseInvoices) return HttpResponse.json({ message: 'bad request' }, { status: 400 });
    return HttpResponse.json({
      id: 7_000_000 + invoiceCalls,
      invoice_url: `https://nowpayments.test/payment/?iid=${7_000_000 + invoiceCalls}`,
    });
  }),
  http.get(`${API}/payment/:id`, ({ params }) => {
    const answer = paymentAnswers.get(String(params.id));
    return answer === undefined
      ? HttpResponse.json({ message: 'Payment not found' }, { status: 404 })
      : HttpResponse.json(answer);
  }),
);

let harness: Harness;
const tokens: Record<string, string> = {};
let memberTenant: string;

beforeAll(async () => {
  harness = await createHarness({
    config: { nowpaymentsApiKey: API_KEY, nowpaymentsApiUrl: API, apiKeysMaxActive: 3 },
  });
  const issue = async (role: Role, subject: string, tenantId?: string) =>
    (
      await issueCallerToken(harness.services, {
        role,
        subject,
        ttlSeconds: 3600,
        ...(tenantId === undefined ? {} : { tenantId }),
      })
    ).token;
  memberTenant = (await createTenant(harness.services, { name: 'Member tenant', tier: 4 })).id;
  tokens.admin = await issue('admin', ADMIN_SUBJECT);
  tokens.operator = await issue('operator', 'olga');
  tokens.member = await issue('member', 'mia', memberTenant);
});

afterAll(async () => {
  network.close();
  await harness.close();
});

afterEach(() => {
  refuseInvoices = false;
  paymentAnswers.clear();
});

let requests = 0;
/** A tRPC call with its own request id (returned), as a plain HTTP client makes it. */
async function call(
  token: string | undefined,
  path: string,
  input: unknown,
  method: 'GET' | 'POST' = 'POST',
): Promise<{
  status: number;
  requestId: string;
  data: Record<string, unknown>;
  error?: Record<string, unknown>;
}> {
  requests += 1;
  const requestId = `audit-test-${requests}`;
  const headers: Record<string, string> = { 'x-request-id': requestId, 'content-type': 'application/json' };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const response =
    method === 'POST'
      ? await harness.request(`/trpc/${path}`, { method, headers, body: JSON.stringify(input) })
      : await harness.request(`/trpc/${path}?input=${encodeURIComponent(JSON.stringify(input))}`, {
          headers,
        });
  const body = (await response.json()) as {
    result?: { data: Record<string, unknown> };
    error?: { data: Record<string, unknown> };
  };
  return {
    status: response.status,
    requestId,
    data: body.result?.data ?? {},
    ...(body.error === undefined ? {} : { error: body.error.data }),
  };
}

function chainRows(chain: string): Promise<AuditEventRow[]> {
  return harness.db
    .select()
    .from(auditEvents)
    .where(eq(auditEvents.chain, chain))
    .orderBy(asc(auditEvents.seq));
}

/** Rows as text, to search them (bigints as decimal strings). */
function asText(rows: AuditEventRow[]): string {
  return JSON.stringify(rows, (_key, value: unknown) =>
    typeof value === 'bigint' ? value.toString() : value,
  );
}

async function allRowCount(): Promise<number> {
  const [row] = await harness.db.select({ n: sql<number>`count(*)::int` }).from(auditEvents);
  return row?.n ?? 0;
}

/** The rows appended to `chain` while `act` ran. */
async function appendedBy(chain: string, act: () => Promise<unknown>): Promise<AuditEventRow[]> {
  const before = (await chainRows(chain)).length;
  await act();
  return (await chainRows(chain)).slice(before);
}

/**
 * Runs `act` while the database refuses every audit row (a trigger the test adds as the owner):
 * whatever `act` changes in the same transaction must be rolled back with it.
 */
async function withAuditRefused<T>(act: () => Promise<T>): Promise<T> {
  const db = harness.db;
  await db.execute(sql`create function audit_test_refuse() returns trigger language plpgsql as $$
    begin raise exception 'audit refused by the test'; end; $$`);
  await db.execute(sql`create trigger audit_test_refuse before insert on audit_events
    for each row execute function audit_test_refuse()`);
  try {
    return await act();
  } finally {
    await db.execute(sql`drop trigger audit_test_refuse on audit_events`);
    await db.execute(sql`drop function audit_test_refuse()`);
  }
}

async function newTenant(): Promise<string> {
  const created = await call(tokens.admin, 'admin.tenants.create', { name: 'Audited', tier: 4 });
  expect(created.status).toBe(200);
  return created.data.id as string;
}

async function newKey(tenantId: string): Promise<{ id: string; key: string }> {
  const created = await call(tokens.admin, 'keys.create', { tenantId, name: 'k' });
  expect(created.status).toBe(200);
  return created.data as { id: string; key: string };
}

// First: a signing-key rotation refused here must find no rotation pending.
describe('a change whose audit row cannot be written is not made (one transaction)', () => {
  it('tenants.create, tenants.update, keys.revoke, credits.grant: nothing of the change is kept', async () => {
    const tenantId = await newTenant();
    const { id: keyId } = await newKey(tenantId);
    const db = harness.db;
    const tenantCount = async () => (await db.select({ id: tenants.id }).from(tenants)).length;
    const countBefore = await tenantCount();
    const rowsBefore = await allRowCount();

    await withAuditRefused(async () => {
      expect((await call(tokens.admin, 'admin.tenants.create', { name: 'Ghost', tier: 1 })).status).toBe(500);
      expect((await call(tokens.admin, 'admin.tenants.update', { id: tenantId, frozen: true })).status).toBe(
        500,
      );
      expect((await call(tokens.admin, 'keys.revoke', { id: keyId })).status).toBe(500);
      const grant = { tenantId, amountMicro: '10', reason: 'x', grantId: 'g-refused' };
      expect((await call(tokens.admin, 'admin.credits.grant', grant)).status).toBe(500);
    });

    expect(await tenantCount()).toBe(countBefore);
    const [tenant] = await db.select().from(tenants).where(eq(tenants.id, tenantId));
    expect(tenant?.frozen).toBe(false);
    const [key] = await db.select().from(apiKeys).where(eq(apiKeys.id, keyId));
    expect(key?.revokedAt).toBeNull();
    expect(await db.select().from(creditGrants).where(eq(creditGrants.id, 'g-refused'))).toEqual([]);
    expect(
      await db
        .select()
        .from(journalEntries)
        .where(and(eq(journalEntries.kind, 'grant'), eq(journalEntries.reference, 'g-refused'))),
    ).toEqual([]);
    expect(await allRowCount()).toBe(rowsBefore);
  });

  it('keys.create, keys.rotate, signingKeys.rotate, payments.reconcile, createInvoice: nothing kept', async () => {
    const tenantId = await newTenant();
    const { id: keyId } = await newKey(tenantId);
    const payment = await insertPayment(harness.services, {
      tenantId,
      pack: 'starter',
      providerPaymentId: '81002',
    });
    paymentAnswers.set('81002', providerAnswer(payment.id, 81002, 'finished'));
    const db = harness.db;
    const keysBefore = await db.select().from(apiKeys).where(eq(apiKeys.tenantId, tenantId));
    const signingBefore = await db.select().from(signingKeys);
    const rowsBefore = await allRowCount();

    await withAuditRefused(async () => {
      expect((await call(tokens.admin, 'keys.create', { tenantId, name: 'ghost' })).status).toBe(500);
      expect((await call(tokens.admin, 'keys.rotate', { id: keyId })).status).toBe(500);
      expect((await call(tokens.admin, 'admin.signingKeys.rotate', undefined)).status).toBe(500);
      expect((await call(tokens.admin, 'admin.payments.reconcile', { paymentId: payment.id })).status).toBe(
        500,
      );
      expect((await call(tokens.admin, 'billing.createInvoice', { tenantId, pack: 'starter' })).status).toBe(
        500,
      );
    });

    expect(await db.select().from(apiKeys).where(eq(apiKeys.tenantId, tenantId))).toEqual(keysBefore);
    expect(await db.select().from(signingKeys)).toEqual(signingBefore);
    const [after] = await db.select().from(cryptoPayments).where(eq(cryptoPayments.id, payment.id));
    expect(after).toMatchObject({ status: 'waiting', mintedAt: null });
    expect(await db.select().from(webhookEvents).where(eq(webhookEvents.paymentId, payment.id))).toEqual([]);
    expect(await db.select().from(cryptoPayments).where(eq(cryptoPayments.tenantId, tenantId))).toHaveLength(
      1,
    );
    expect(await allRowCount()).toBe(rowsBefore);
  });
});

describe('each change through the API leaves exactly one audit row', () => {
  it('tenants.create: tenant.create by a pseudonymous admin, with the request id', async () => {
    const created = await call(tokens.admin, 'admin.tenants.create', { name: 'Acme', tier: 5 });
    expect(created.status).toBe(200);
    const tenantId = created.data.id as string;
    const rows = await chainRows(tenantId);
    expect(rows).toEqual([
      expect.objectContaining({
        tenantId,
        seq: 1,
        action: 'tenant.create',
        target: tenantId,
        actor: pseudonym(ADMIN_SUBJECT),
        actorRole: 'admin',
        requestId: created.requestId,
        summary: { tier: 5 },
        amountMicro: null,
        prevHash: '0'.repeat(64),
      }),
    ]);
    expect(rows[0]?.actor).toMatch(/^act_[0-9a-f]{32}$/);
    expect(asText(rows)).not.toContain('@');
  });

  it('tenants.update: a freeze is tenant.freeze with before and after; an unknown tenant leaves none', async () => {
    const tenantId = await newTenant();
    const frozen = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'admin.tenants.update', { id: tenantId, frozen: true })).status).toBe(
        200,
      );
    });
    expect(frozen).toEqual([
      expect.objectContaining({
        action: 'tenant.freeze',
        summary: {
          before: { tier: 4, monthlyCapMicro: null, frozen: false },
          after: { tier: 4, monthlyCapMicro: null, frozen: true },
        },
      }),
    ]);
    const tier = await appendedBy(tenantId, async () => {
      const update = { id: tenantId, tier: 6, monthlyCapMicro: '900' };
      expect((await call(tokens.admin, 'admin.tenants.update', update)).status).toBe(200);
    });
    expect(tier).toEqual([
      expect.objectContaining({
        action: 'tenant.update',
        summary: {
          before: { tier: 4, monthlyCapMicro: null, frozen: true },
          after: { tier: 6, monthlyCapMicro: '900', frozen: true },
        },
      }),
    ]);

    const total = await allRowCount();
    const unknown = await call(tokens.admin, 'admin.tenants.update', {
      id: `ten_${'0'.repeat(32)}`,
      tier: 2,
    });
    expect(unknown.status).toBe(404);
    expect(await allRowCount()).toBe(total);
  });

  it('keys.create by a member is key.create (role member, no secret); one past the limit leaves none', async () => {
    const tenantId = memberTenant;
    let key = '';
    const created = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.member, 'keys.create', { name: 'ci key' });
      expect(answer.status).toBe(200);
      key = answer.data.key as string;
      expect(answer.data).toMatchObject({ id: expect.stringMatching(/^key_/) });
    });
    expect(created).toEqual([
      expect.objectContaining({
        action: 'key.create',
        actor: pseudonym('mia'),
        actorRole: 'member',
        summary: { prefix: expect.stringMatching(/^sg_live_/), sandbox: false },
      }),
    ]);
    expect(asText(created)).not.toContain(key);

    // The limit is 3 active keys here: fill it, then one more is refused and leaves no row.
    await call(tokens.member, 'keys.create', { name: 'second' });
    await call(tokens.member, 'keys.create', { name: 'third' });
    const refused = await appendedBy(tenantId, async () => {
      expect((await call(tokens.member, 'keys.create', { name: 'fourth' })).status).toBe(409);
    });
    expect(refused).toEqual([]);
  });

  it('keys.revoke is key.revoke; revoking a revoked key changes nothing and leaves none', async () => {
    const tenantId = await newTenant();
    const { id } = await newKey(tenantId);
    const revoked = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'keys.revoke', { id })).status).toBe(200);
    });
    expect(revoked).toEqual([
      expect.objectContaining({
        action: 'key.revoke',
        target: id,
        summary: { revokedAt: { before: null, after: expect.any(String) } },
      }),
    ]);
    const again = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'keys.revoke', { id })).status).toBe(200);
    });
    expect(again).toEqual([]);
  });

  it('keys.rotate is key.rotate naming the new key; rotating a revoked key (409) leaves none', async () => {
    const tenantId = await newTenant();
    const { id } = await newKey(tenantId);
    let newKeyId = '';
    const rotated = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.admin, 'keys.rotate', { id });
      expect(answer.status).toBe(200);
      newKeyId = answer.data.id as string;
    });
    expect(rotated).toEqual([
      expect.objectContaining({
        action: 'key.rotate',
        target: id,
        summary: { newKeyId, prefix: expect.any(String), oldKeyRevokedAt: expect.any(String) },
      }),
    ]);
    const refused = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'keys.rotate', { id })).status).toBe(409);
    });
    expect(refused).toEqual([]);
  });

  it("two first settings of one flag at once: the second row's before is the first's after", async () => {
    const tenantId = await newTenant();
    const rows = await appendedBy(tenantId, async () => {
      const answers = await Promise.all([
        call(tokens.admin, 'admin.flags.set', { flag: 'inference', enabled: false, tenantId }),
        call(tokens.admin, 'admin.flags.set', { flag: 'inference', enabled: true, tenantId }),
      ]);
      expect(answers.map((answer) => answer.status)).toEqual([200, 200]);
    });
    expect(rows).toHaveLength(2);
    const [first, second] = rows.map(
      (row) => row.summary as { before: boolean | null; after: boolean | null },
    );
    expect(first?.before).toBeNull();
    expect(second?.before).toBe(first?.after);
  });

  it('keys.update with nothing to change answers the key as it is and leaves no row (was a 500)', async () => {
    const tenantId = await newTenant();
    const { id } = await newKey(tenantId);
    const none = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.admin, 'keys.update', { id });
      expect(answer.status).toBe(200);
      expect(answer.data).toMatchObject({ id, rpmLimit: 60 });
    });
    expect(none).toEqual([]);
  });

  it('tokens.issue is token.issue naming the subject by its pseudonym, on the member tenant or the platform chain', async () => {
    const tenantId = await newTenant();
    const member = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.admin, 'admin.tokens.issue', {
        role: 'member',
        tenantId,
        subject: 'someone@example.com',
        ttlSeconds: 600,
      });
      expect(answer.status).toBe(200);
    });
    expect(member).toEqual([
      expect.objectContaining({
        action: 'token.issue',
        target: pseudonym('someone@example.com'),
        summary: expect.objectContaining({ role: 'member', ttlSeconds: 600 }),
      }),
    ]);
    expect(asText(member)).not.toContain('@');
    const operator = await appendedBy(PLATFORM_CHAIN, async () => {
      expect((await call(tokens.admin, 'admin.tokens.issue', { role: 'operator' })).status).toBe(200);
    });
    expect(operator.map((row) => row.action)).toEqual(['token.issue']);
  });

  it('keys.update is key.update with the limits before and after', async () => {
    const tenantId = await newTenant();
    const { id } = await newKey(tenantId);
    const updated = await appendedBy(tenantId, async () => {
      expect(
        (await call(tokens.admin, 'keys.update', { id, rpmLimit: 5, monthlyCapMicro: '7' })).status,
      ).toBe(200);
    });
    expect(updated).toEqual([
      expect.objectContaining({
        action: 'key.update',
        summary: {
          before: { rpmLimit: 60, tpdLimit: null, monthlyCapMicro: null },
          after: { rpmLimit: 5, tpdLimit: null, monthlyCapMicro: '7' },
        },
      }),
    ]);
  });

  it('pricing.set and flags.set are one row each with before and after, on the tenant or the platform chain', async () => {
    const tenantId = await newTenant();
    const priced = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.admin, 'admin.pricing.set', {
        pool: 'standard',
        microPer1kTokens: '1500',
        tenantId,
      });
      expect(answer.status).toBe(200);
    });
    expect(priced).toEqual([
      expect.objectContaining({
        action: 'pricing.set',
        target: 'standard',
        pool: 'standard',
        summary: { before: null, after: '1500' },
      }),
    ]);
    const flagged = await appendedBy(PLATFORM_CHAIN, async () => {
      expect((await call(tokens.admin, 'admin.flags.set', { flag: 'keys', enabled: false })).status).toBe(
        200,
      );
      expect((await call(tokens.admin, 'admin.flags.set', { flag: 'keys', enabled: null })).status).toBe(200);
    });
    expect(flagged.map((row) => [row.action, row.target, row.summary])).toEqual([
      ['flags.set', 'keys', { before: null, after: false }],
      ['flags.set', 'keys', { before: false, after: null }],
    ]);
    // A refused change (an operator) leaves none.
    const refused = await appendedBy(PLATFORM_CHAIN, async () => {
      expect((await call(tokens.operator, 'admin.flags.set', { flag: 'keys', enabled: false })).status).toBe(
        403,
      );
    });
    expect(refused).toEqual([]);
  });

  it('credits.grant is one row with the amount; a replay or a reused id (409) leaves none', async () => {
    const tenantId = await newTenant();
    const input = {
      tenantId,
      amountMicro: '2500000',
      reason: 'welcome alice@example.com',
      grantId: 'g-audit-1',
    };
    const granted = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'admin.credits.grant', input)).status).toBe(200);
    });
    expect(granted).toEqual([
      expect.objectContaining({
        action: 'credits.grant',
        target: 'g-audit-1',
        amountMicro: 2_500_000n,
        summary: { grantId: 'g-audit-1' },
      }),
    ]);
    // The reason is free text (here with an address in it): it stays out of the trail.
    expect(asText(granted)).not.toContain('welcome');
    const replays = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'admin.credits.grant', input)).status).toBe(200);
      const reused = { ...input, amountMicro: '1' };
      expect((await call(tokens.admin, 'admin.credits.grant', reused)).status).toBe(409);
    });
    expect(replays).toEqual([]);
  });

  it('a grant the store refuses leaves its row and the reversal (the trail is append-only): amounts sum to 0', async () => {
    const tenantId = await newTenant();
    for (let i = 0; i < 4; i++) {
      const big = { tenantId, amountMicro: '1000000000000000', reason: 'big' };
      expect((await call(tokens.admin, 'admin.credits.grant', big)).status).toBe(200);
    }
    const over = { tenantId, amountMicro: '1000000000000000', reason: 'too big', grantId: 'g-over' };
    const rows = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'admin.credits.grant', over)).status).toBe(400);
    });
    expect(rows.map((row) => [row.action, row.target, row.amountMicro])).toEqual([
      ['credits.grant', 'g-over', 1_000_000_000_000_000n],
      ['credits.reverse', 'g-over', -1_000_000_000_000_000n],
    ]);
    expect(rows[1]?.summary).toEqual({ grantId: 'g-over', refusedField: expect.any(String) });
  });

  it('signingKeys.rotate is one row on the platform chain; a second call while one is pending leaves none', async () => {
    const rotated = await appendedBy('platform', async () => {
      expect((await call(tokens.admin, 'admin.signingKeys.rotate', undefined)).status).toBe(200);
    });
    expect(rotated).toEqual([
      expect.objectContaining({
        tenantId: null,
        chain: 'platform',
        action: 'signing_key.rotate',
        target: expect.any(String),
        summary: { activatesAt: expect.any(String), oldKeysExpireAt: expect.any(String) },
      }),
    ]);
    const again = await appendedBy('platform', async () => {
      const answer = await call(tokens.admin, 'admin.signingKeys.rotate', undefined);
      expect(answer.data.kid).toBe(rotated[0]?.target);
    });
    expect(again).toEqual([]);
  });

  it('payments.reconcile is payment.reconcile with the minted amount; a refusal (409) leaves none', async () => {
    const tenantId = await newTenant();
    const payment = await insertPayment(harness.services, {
      tenantId,
      pack: 'starter',
      providerPaymentId: '81001',
    });
    paymentAnswers.set('81001', providerAnswer(payment.id, 81001, 'finished'));
    const reconciled = await appendedBy(tenantId, async () => {
      const answer = await call(tokens.admin, 'admin.payments.reconcile', { paymentId: payment.id });
      expect(answer.data).toMatchObject({ status: 'processed', minted: true });
    });
    expect(reconciled).toEqual([
      expect.objectContaining({
        action: 'payment.reconcile',
        target: payment.id,
        amountMicro: 5_000_000n,
        summary: {
          providerStatus: 'finished',
          outcome: 'processed',
          reason: null,
          paymentStatus: { before: 'waiting', after: 'finished' },
        },
      }),
    ]);
    // No provider payment id yet: refused before anything is applied.
    const unread = await insertPayment(harness.services, { tenantId, pack: 'starter' });
    const refused = await appendedBy(tenantId, async () => {
      expect((await call(tokens.admin, 'admin.payments.reconcile', { paymentId: unread.id })).status).toBe(
        409,
      );
    });
    expect(refused).toEqual([]);
  });

  it('billing.createInvoice is invoice.create; one the provider refuses leaves it and invoice.discard', async () => {
    const opened = await appendedBy(memberTenant, async () => {
      expect((await call(tokens.member, 'billing.createInvoice', { pack: 'starter' })).status).toBe(200);
    });
    expect(opened).toEqual([
      expect.objectContaining({
        action: 'invoice.create',
        actorRole: 'member',
        summary: { pack: 'starter', priceAmount: '5', priceCurrency: 'usd' },
      }),
    ]);
    refuseInvoices = true;
    const refused = await appendedBy(memberTenant, async () => {
      expect((await call(tokens.member, 'billing.createInvoice', { pack: 'starter' })).status).toBe(503);
    });
    expect(refused.map((row) => row.action)).toEqual(['invoice.create', 'invoice.discard']);
    expect(refused[0]?.target).toBe(refused[1]?.target);
  });

  it('concurrent changes on one tenant chain in order: seq 1..n without gaps, and the chain verifies', async () => {
    const tenantId = await newTenant();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        call(tokens.admin, 'admin.credits.grant', { tenantId, amountMicro: String(i + 1), reason: 'burst' }),
      ),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(20).fill(200));
    const rows = await chainRows(tenantId);
    expect(rows.map((row) => row.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    expect((await call(tokens.operator, 'admin.audit.verify', { tenantId }, 'GET')).data).toEqual({
      ok: true,
      rows: 21,
    });
  });
});

describe('admin.audit.verify', () => {
  /** A tenant whose chain has `n` rows (its creation and n - 1 grants). */
  async function tenantWithRows(n: number): Promise<string> {
    const tenantId = await newTenant();
    for (let i = 1; i < n; i++) {
      const grant = { tenantId, amountMicro: String(i), reason: 'r' };
      expect((await call(tokens.admin, 'admin.credits.grant', grant)).status).toBe(200);
    }
    return tenantId;
  }

  /** As the database owner, with the append-only trigger off for this transaction only. */
  function byHand(statement: SQL) {
    return harness.db.transaction(async (tx) => {
      await tx.execute(sql`set local session_replication_role = replica`);
      await tx.execute(statement);
    });
  }

  const verify = async (tenantId: string, token = tokens.operator) =>
    call(token, 'admin.audit.verify', { tenantId }, 'GET');

  it('an untouched chain verifies, for an operator and an admin', async () => {
    const tenantId = await tenantWithRows(4);
    expect((await verify(tenantId)).data).toEqual({ ok: true, rows: 4 });
    expect((await verify(tenantId, tokens.admin)).data).toEqual({ ok: true, rows: 4 });
    expect((await verify('platform')).data).toMatchObject({ ok: true });
  });

  it('names the row edited by hand (an amount, a target, a summary)', async () => {
    for (const [seq, edit] of [
      [3, sql`amount_micro = amount_micro + 1`],
      [2, sql`target = 'someone-else'`],
      [4, sql`summary = '{"grantId":"forged"}'::jsonb`],
    ] as const) {
      const tenantId = await tenantWithRows(5);
      await byHand(sql`update audit_events set ${edit} where chain = ${tenantId} and seq = ${seq}`);
      expect((await verify(tenantId)).data).toEqual({ ok: false, seq, reason: 'edited' });
    }
  });

  it('finds an edit whose row hash was recomputed where the next row no longer links to it', async () => {
    const tenantId = await tenantWithRows(4);
    const [, second] = await chainRows(tenantId);
    if (second === undefined) throw new Error('no second row');
    const forged = { ...lineOf(second), target: 'forged' };
    const hash = expectedHash(second.prevHash, forged, tenantId);
    await byHand(
      sql`update audit_events set target = 'forged', hash = ${hash} where chain = ${tenantId} and seq = 2`,
    );
    expect((await verify(tenantId)).data).toEqual({ ok: false, seq: 3, reason: 'unlinked' });
  });

  it('names the row deleted by hand', async () => {
    const tenantId = await tenantWithRows(5);
    await byHand(sql`delete from audit_events where chain = ${tenantId} and seq = 3`);
    expect((await verify(tenantId)).data).toEqual({ ok: false, seq: 3, reason: 'missing' });
  });

  it('the database refuses UPDATE, DELETE and TRUNCATE through the app’s connection', async () => {
    const tenantId = await tenantWithRows(2);
    const db = harness.db;
    for (const attempt of [
      sql`update audit_events set target = 'x' where chain = ${tenantId}`,
      sql`delete from audit_events where chain = ${tenantId}`,
      sql`truncate audit_events`,
    ]) {
      const error = await db.execute(attempt).then(
        () => undefined,
        (thrown: unknown) => thrown as Error & { cause?: Error },
      );
      expect(`${error?.message} ${error?.cause?.message}`).toMatch(/the audit trail is append-only/);
    }
    expect(await chainRows(tenantId)).toHaveLength(2);
    expect((await verify(tenantId)).data).toEqual({ ok: true, rows: 2 });
  });

  it('who may verify: a member gets 403, no token 401, an unknown tenant 404, a malformed id 400', async () => {
    expect((await verify(memberTenant, tokens.member)).status).toBe(403);
    expect((await call(undefined, 'admin.audit.verify', { tenantId: memberTenant }, 'GET')).status).toBe(401);
    expect((await verify(`ten_${'0'.repeat(32)}`)).status).toBe(404);
    expect((await verify('nope')).status).toBe(400);
  });
});

/**
 * The row hash as docs/audit.md defines it, written here independently of src/audit: sha256 over
 * the previous hash then the JSON array of the row's fields (summary keys sorted).
 */
function expectedHash(prevHash: string, line: ExportLine, tenantId: string | null): string {
  const sortKeys = (value: unknown): unknown =>
    Array.isArray(value)
      ? value.map(sortKeys)
      : value !== null && typeof value === 'object'
        ? Object.fromEntries(
            Object.entries(value)
              .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
              .map(([k, v]) => [k, sortKeys(v)]),
          )
        : value;
  const content = JSON.stringify([
    tenantId,
    line.seq,
    line.timestamp,
    line.actor,
    line.actor_role,
    line.action,
    line.target,
    sortKeys(line.summary),
    line.amount_micro,
    line.pool,
    line.request_id,
  ]);
  return createHash('sha256')
    .update(prevHash + content)
    .digest('hex');
}

interface ExportLine {
  seq: number;
  timestamp: string;
  tenant_id: string | null;
  action: string;
  target: string;
  amount_micro: string | null;
  pool: string | null;
  actor: string;
  actor_role: string;
  summary: Record<string, unknown>;
  request_id: string | null;
  prev_hash: string;
  hash: string;
}

describe('GET /api/v1/admin/tenants/:id/audit.jsonl', () => {
  const exportOf = (path: string, token?: string) =>
    harness.request(path, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });

  it('gives an admin and an operator one JSON object per line that chains, without e-mail or secrets', async () => {
    const tenantId = await newTenant();
    const { key } = await newKey(tenantId);
    await call(tokens.admin, 'admin.credits.grant', {
      tenantId,
      amountMicro: '42',
      reason: 'bob@example.com',
    });
    for (const token of [tokens.admin, tokens.operator]) {
      const response = await exportOf(`/api/v1/admin/tenants/${tenantId}/audit.jsonl`, token);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
      const text = await response.text();
      expect(text).not.toContain('@');
      expect(text).not.toContain(key);
      const lines = text
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as ExportLine);
      expect(lines.map((line) => [line.seq, line.action, line.amount_micro])).toEqual([
        [1, 'tenant.create', null],
        [2, 'key.create', null],
        [3, 'credits.grant', '42'],
      ]);
      let prev = '0'.repeat(64);
      for (const line of lines) {
        expect(line.prev_hash).toBe(prev);
        expect(line.hash).toBe(expectedHash(prev, line, tenantId));
        expect(line.actor).toBe(pseudonym(ADMIN_SUBJECT));
        prev = line.hash;
      }
    }
  });

  it('from (inclusive) and to (exclusive) select by time', async () => {
    const tenantId = await newTenant();
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await call(tokens.admin, 'admin.credits.grant', { tenantId, amountMicro: '1', reason: 'r' });
    }
    const rows = await chainRows(tenantId);
    const at = (seq: number) => rows[seq - 1]?.at.getTime() ?? 0;
    const seqs = async (query: string) => {
      const response = await exportOf(`/api/v1/admin/tenants/${tenantId}/audit.jsonl?${query}`, tokens.admin);
      expect(response.status).toBe(200);
      const text = await response.text();
      return text === ''
        ? []
        : text
            .trimEnd()
            .split('\n')
            .map((line) => (JSON.parse(line) as ExportLine).seq);
    };
    const iso = (ms: number) => new Date(ms).toISOString();
    const inRange = (from: number, to: number) =>
      rows.filter((row) => row.at.getTime() >= from && row.at.getTime() < to).map((row) => row.seq);
    expect(await seqs(`from=${iso(at(2))}`)).toEqual(inRange(at(2), Number.POSITIVE_INFINITY));
    expect(await seqs(`to=${iso(at(3))}`)).toEqual(inRange(0, at(3)));
    expect(await seqs(`from=${iso(at(2))}&to=${iso(at(4))}`)).toEqual(inRange(at(2), at(4)));
    // The rows are 5 ms apart or more: the ranges above cut the chain where the test says.
    expect(inRange(at(2), at(4))).toEqual([2, 3]);
  });

  it.each([
    ['no bearer', undefined, 'tenant', 401, 'unauthorized'],
    ['a bearer that is not a token', 'nonsense', 'tenant', 401, 'unauthorized'],
    ['a member, even of that tenant', 'member', 'tenant', 403, 'forbidden'],
    ['a malformed tenant id', 'admin', 'not-a-tenant', 400, 'invalid_request'],
    ['an unknown tenant', 'admin', `ten_${'0'.repeat(32)}`, 404, 'not_found'],
  ] as const)('refuses %s in the error shape', async (_, who, id, status, code) => {
    const token = who === undefined ? undefined : (tokens[who] ?? who);
    const path = `/api/v1/admin/tenants/${id === 'tenant' ? memberTenant : id}/audit.jsonl`;
    const response = await exportOf(path, token);
    expect(response.status).toBe(status);
    expect(await response.json()).toEqual({
      error: expect.objectContaining({ code, message: expect.any(String), requestId: expect.any(String) }),
    });
  });

  it.each(['yesterday', '0000-01-01'])(
    'refuses from=%s with 400 naming the parameter (before any row is streamed)',
    async (from) => {
      const response = await exportOf(
        `/api/v1/admin/tenants/${memberTenant}/audit.jsonl?from=${from}`,
        tokens.admin,
      );
      expect(response.status).toBe(400);
      const body = (await response.json()) as { error: { code: string; issues: { path: string }[] } };
      expect(body.error.code).toBe('invalid_request');
      expect(body.error.issues.map((issue) => issue.path)).toEqual(['from']);
    },
  );

  it('streams 100,000 rows with bounded memory; the export chains and the chain verifies', {
    timeout: 120_000,
  }, async () => {
    const ROWS = 100_000;
    const tenantId = await newTenant();
    const [head] = await chainRows(tenantId);
    if (head === undefined) throw new Error('no first row');
    await insertChain(tenantId, head, ROWS - 1);
    expect((await verifyDirect(tenantId)).data).toEqual({ ok: true, rows: ROWS });

    // Forced collections: what is measured is what is still held, not garbage awaiting a GC.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const held = () => {
      gc();
      const memory = process.memoryUsage();
      return memory.heapUsed + memory.arrayBuffers;
    };
    const server = await serve(harness.app);
    try {
      const baseline = held();
      let peak = 0;
      const response = await fetch(`${server.url}/api/v1/admin/tenants/${tenantId}/audit.jsonl`, {
        headers: { authorization: `Bearer ${tokens.admin}` },
      });
      expect(response.status).toBe(200);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let pending = '';
      let lines = 0;
      let bytes = 0;
      let prev = '0'.repeat(64);
      let broken: string | undefined;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        pending += decoder.decode(value, { stream: true });
        let newline = pending.indexOf('\n');
        while (newline !== -1) {
          const line = JSON.parse(pending.slice(0, newline)) as ExportLine;
          pending = pending.slice(newline + 1);
          lines += 1;
          if (broken === undefined) {
            if (line.seq !== lines) broken = `seq ${line.seq} at line ${lines}`;
            else if (line.prev_hash !== prev) broken = `prev_hash of seq ${line.seq}`;
            else if (line.hash !== expectedHash(prev, line, tenantId)) broken = `hash of seq ${line.seq}`;
          }
          prev = line.hash;
          if (lines % 5000 === 0) peak = Math.max(peak, held() - baseline);
          newline = pending.indexOf('\n');
        }
      }
      peak = Math.max(peak, held() - baseline);
      console.log(
        `audit export: ${lines} lines, ${(bytes / 1e6).toFixed(1)} MB streamed; peak memory held above the baseline while reading: ${(peak / 1e6).toFixed(2)} MB`,
      );
      expect(broken).toBeUndefined();
      expect(pending).toBe('');
      expect(lines).toBe(ROWS);
      // Holding the whole export needs at least its size; a page at a time, a small part of it.
      expect(peak).toBeLessThan(bytes / 4);
    } finally {
      await server.close();
    }
  });
});

/** A stored row as the export writes it. */
function lineOf(row: AuditEventRow): ExportLine {
  return {
    seq: row.seq,
    timestamp: row.at.toISOString(),
    tenant_id: row.tenantId,
    action: row.action,
    target: row.target,
    amount_micro: row.amountMicro === null ? null : row.amountMicro.toString(),
    pool: row.pool,
    actor: row.actor,
    actor_role: row.actorRole,
    summary: row.summary,
    request_id: row.requestId,
    prev_hash: row.prevHash,
    hash: row.hash,
  };
}

/** admin.audit.verify as an operator (the 100,000-row chain). */
function verifyDirect(tenantId: string) {
  return call(tokens.operator, 'admin.audit.verify', { tenantId }, 'GET');
}

/**
 * Appends `count` rows after `head` straight into the table, 10,000 per INSERT, hashed by the
 * test's own `expectedHash`, as grants of 1 µ by the admin a millisecond apart.
 */
async function insertChain(tenantId: string, head: AuditEventRow, count: number): Promise<void> {
  const actor = pseudonym(ADMIN_SUBJECT);
  let prev = head.hash;
  const start = head.at.getTime();
  for (let offset = 0; offset < count; offset += 10_000) {
    const batch: ExportLine[] = [];
    for (let i = offset; i < Math.min(count, offset + 10_000); i++) {
      const seq = head.seq + 1 + i;
      const line: ExportLine = {
        seq,
        timestamp: new Date(start + seq).toISOString(),
        tenant_id: tenantId,
        action: 'credits.grant',
        target: `bulk-${seq}`,
        amount_micro: '1',
        pool: null,
        actor,
        actor_role: 'admin',
        summary: { grantId: `bulk-${seq}` },
        request_id: `bulk-request-${seq}`,
        prev_hash: prev,
        hash: '',
      };
      line.hash = expectedHash(prev, line, tenantId);
      prev = line.hash;
      batch.push(line);
    }
    await harness.db.execute(sql`
      insert into audit_events (tenant_id, seq, at, actor, actor_role, action, target, summary,
        amount_micro, pool, request_id, prev_hash, hash)
      select tenant_id, seq, "timestamp", actor, actor_role, action, target, summary,
        amount_micro::bigint, pool, request_id, prev_hash, hash
      from jsonb_to_recordset(${JSON.stringify(batch)}::jsonb) as r(tenant_id text, seq int,
        "timestamp" timestamptz, actor text, actor_role text, action text, target text, summary jsonb,
        amount_micro text, pool text, request_id text, prev_hash text, hash text)`);
  }
}

/** NOWPayments' GET /payment/:id body for our payment `orderId` at `status`. */
function providerAnswer(orderId: string, providerPaymentId: number, status: string): Record<string, unknown> {
  return {
    payment_id: providerPaymentId,
    invoice_id: 5_500_000_001,
    order_id: orderId,
    payment_status: status,
    price_amount: 5,
    price_currency: 'usd',
    actually_paid: 0.0001,
    pay_currency: 'btc',
    updated_at: new Date().toISOString(),
  };
}

// 60 s: each CLI run builds the bundle (cached) and starts a Node process, seconds on a busy machine.
describe('spicegate audit export / verify', { timeout: 60_000 }, () => {
  /** `spicegate …` (the real bin) against this file's gateway on a real socket, as its admin. */
  const spicegate = (url: string, args: string[]) => spicegateCli(url, harness.adminToken, args);

  it('export writes the chain as JSON lines; verify says ok, then names a row deleted by hand (exit 1)', async () => {
    const tenantId = await newTenant();
    await call(tokens.admin, 'admin.credits.grant', { tenantId, amountMicro: '3', reason: 'r' });
    await call(tokens.admin, 'admin.credits.grant', { tenantId, amountMicro: '4', reason: 'r' });
    const server = await serve(harness.app);
    try {
      const exported = await spicegate(server.url, ['audit', 'export', '--tenant', tenantId]);
      expect(exported.code).toBe(0);
      const lines = exported.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as ExportLine);
      expect(lines.map((line) => [line.seq, line.action, line.amount_micro])).toEqual([
        [1, 'tenant.create', null],
        [2, 'credits.grant', '3'],
        [3, 'credits.grant', '4'],
      ]);

      const verified = await spicegate(server.url, ['audit', 'verify', '--tenant', tenantId]);
      expect(verified.code).toBe(0);
      expect(JSON.parse(verified.stdout)).toEqual({ ok: true, rows: 3 });

      await harness.db.transaction(async (tx) => {
        await tx.execute(sql`set local session_replication_role = replica`);
        await tx.execute(sql`delete from audit_events where chain = ${tenantId} and seq = 2`);
      });
      const broken = await spicegate(server.url, ['audit', 'verify', '--tenant', tenantId]);
      expect(broken.code).toBe(1);
      expect(JSON.parse(broken.stdout)).toEqual({ ok: false, seq: 2, reason: 'missing' });

      const unknown = await spicegate(server.url, ['audit', 'export', '--tenant', `ten_${'0'.repeat(32)}`]);
      expect(unknown.code).toBe(1);
      expect(unknown.stdout).toBe('');
      expect(unknown.stderr).toMatch(/audit export failed \(404\)/);
    } finally {
      await server.close();
    }
  });
});
