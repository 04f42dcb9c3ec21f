import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../db/index.js';
import { openPostgres } from '../../db/postgres.js';
import { conservationChecks, poolDecisions } from '../../db/schema/index.js';
import { ADMIN_ROLE, asAdmin, asKeyLookup, asSpendBatch, asTenant, TENANT_ROLE } from '../../db/scope.js';
import { grantCredits } from '../../src/billing/credits.js';
import { setFlag } from '../../src/flags/admin-flags.js';
import { createKey } from '../../src/keys/keys.js';
import { writeSettledSpend } from '../../src/ledger/outbox.js';
import { setPrice } from '../../src/pricing/admin-pricing.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { insertPayment } from '../support/payments.js';

/**
 * Tenant isolation by PostgreSQL row-level security (issue 16, db/scope.ts, migration 0013): the
 * catalog, what each role sees and may write, and that a scope ends with its transaction. Runs on
 * PGlite and on the server (where the app itself connects as a login owning nothing).
 */

let harness: Harness;
let app: Db;
const tenantA = { id: '', keyPrefixes: [] as string[] };
const tenantB = { id: '', keyPrefixes: [] as string[] };

/** Rows of a query as plain objects, whichever driver answered. */
async function rows<T>(db: Db, query: ReturnType<typeof sql>): Promise<T[]> {
  const result = (await db.execute(query)) as unknown;
  return (Array.isArray(result) ? result : (result as { rows: T[] }).rows) as T[];
}

/** Every table of the public schema with a tenant column, and that column (tenants: its id). */
async function tenantTables(db: Db): Promise<{ table: string; column: string }[]> {
  return rows(
    db,
    sql`select table_name as "table", column_name as "column" from information_schema.columns
      where table_schema = 'public' and (column_name = 'tenant_id' or (table_name = 'tenants' and column_name = 'id'))
      order by table_name`,
  );
}

/** The database's own message for a refused statement (drizzle wraps it as the cause). */
async function refusal(work: Promise<unknown>): Promise<string> {
  const error = await work.then(
    () => undefined,
    (thrown: unknown) => thrown as Error & { cause?: Error },
  );
  return error === undefined ? 'not refused' : `${error.cause?.message ?? error.message}`;
}

async function countBy(db: Db, table: string, column: string, tenantId: string, equal: boolean) {
  const [row] = await rows<{ n: number }>(
    db,
    sql`select count(*)::int as n from ${sql.identifier(table)} where ${sql.identifier(column)} ${
      equal ? sql`=` : sql`is distinct from`
    } ${tenantId}`,
  );
  return row?.n ?? -1;
}

beforeAll(async () => {
  harness = await createHarness();
  const { services } = harness;
  app = services.db;
  for (const tenant of [tenantA, tenantB]) {
    tenant.id = (await createTenant(services, { name: 'RLS tenant', tier: 5 })).id;
    for (const name of ['first', 'second'])
      tenant.keyPrefixes.push((await createKey(services, tenant.id, { name })).prefix);
    await grantCredits(services, {
      tenantId: tenant.id,
      amountMicro: 1_000_000n,
      reason: 'rls',
      grantedBy: 'test',
    });
    await writeSettledSpend(app, [
      {
        reservationId: `res_rls_${tenant.id}`,
        tenantId: tenant.id,
        keyId: 'key_rls',
        pool: 'standard',
        promptTokens: 10,
        completionTokens: 20,
        costMicro: 300n,
        chargedMicro: 300n,
        free: false,
        settledAt: new Date(),
      },
    ]);
    await insertPayment(services, { tenantId: tenant.id });
    await setPrice(services, { pool: 'cheap', microPer1kTokens: 7n, tenantId: tenant.id });
    await setFlag(services, { flag: 'keys', enabled: true, tenantId: tenant.id });
    // Written only by the background paths (pool decisions, conservation): as the owner here.
    await harness.db.insert(poolDecisions).values({
      reservationId: `res_dec_${tenant.id}`,
      tenantId: tenant.id,
      keyId: 'key_rls',
      requested: 'flagship',
      actual: 'standard',
      reason: 'tier',
      costMicro: 5n,
      createdAt: new Date(),
    });
    await harness.db.insert(conservationChecks).values({
      tenantId: tenant.id,
      checkedAt: new Date(),
      outcome: 'repaired',
      driftMicro: 1n,
      creditedDriftMicro: 1n,
      committedDriftMicro: 0n,
      beforeCreditedMicro: 0n,
      beforeCommittedMicro: 0n,
      beforeOutboxMicro: 0n,
      beforeReservedMicro: 0n,
      bookCreditedMicro: 1n,
      bookSpentMicro: 0n,
    });
  }
});

afterAll(async () => {
  await harness?.close();
});

describe('the catalog', () => {
  it('every table with a tenant column has ENABLE and FORCE row-level security and a policy on app.current_tenant', async () => {
    const tables = await tenantTables(harness.db);
    // The tables of migration 0013 at least: a new tenant table joins this list by itself.
    expect(tables.map((t) => t.table)).toEqual(
      expect.arrayContaining([
        'api_keys',
        'audit_events',
        'conservation_checks',
        'credit_grants',
        'crypto_payments',
        'feature_flags',
        'journal_entries',
        'pool_decisions',
        'pool_prices',
        'spend',
        'tenants',
      ]),
    );
    for (const { table, column } of tables) {
      const [flags] = await rows<{ enabled: boolean; forced: boolean }>(
        harness.db,
        sql`select relrowsecurity as enabled, relforcerowsecurity as forced from pg_class
          where oid = ${`public.${table}`}::regclass`,
      );
      expect({ table, ...flags }).toEqual({ table, enabled: true, forced: true });
      const policies = await rows<{ roles: string; qual: string; check: string }>(
        harness.db,
        sql`select array_to_string(roles, ',') as roles, qual, with_check as check from pg_policies
          where schemaname = 'public' and tablename = ${table} and policyname = 'tenant_isolation'`,
      );
      expect(policies, `${table} has its tenant_isolation policy`).toHaveLength(1);
      const [policy] = policies;
      expect(policy?.roles).toBe(TENANT_ROLE);
      for (const expression of [policy?.qual, policy?.check]) {
        expect(expression).toContain(column);
        expect(expression).toContain("current_setting('app.current_tenant'");
      }
    }
  });

  it('the application roles are not owners, superusers or BYPASSRLS, and cannot log in', async () => {
    const roles = await rows<{ name: string; superuser: boolean; bypass: boolean; login: boolean }>(
      harness.db,
      sql`select rolname as name, rolsuper as superuser, rolbypassrls as bypass, rolcanlogin as login
        from pg_roles where rolname in (${TENANT_ROLE}, ${ADMIN_ROLE}) order by rolname`,
    );
    expect(roles).toEqual([
      { name: ADMIN_ROLE, superuser: false, bypass: false, login: false },
      { name: TENANT_ROLE, superuser: false, bypass: false, login: false },
    ]);
    const owned = await rows<{ name: string }>(
      harness.db,
      sql`select c.relname as name from pg_class c join pg_roles r on r.oid = c.relowner
        where r.rolname in (${TENANT_ROLE}, ${ADMIN_ROLE})`,
    );
    expect(owned).toEqual([]);
  });

  it('the app connects as a NOINHERIT login refused everything outside the two roles (PGlite: one superuser session)', async () => {
    const [me] = await rows<{ superuser: boolean; inherit: boolean }>(
      app,
      sql`select rolsuper as superuser, rolinherit as inherit from pg_roles where rolname = current_user`,
    );
    if (harness.shared.database.url === undefined) {
      expect(me?.superuser).toBe(true);
      return;
    }
    expect(me).toEqual({ superuser: false, inherit: false });
    for (const { table } of await tenantTables(harness.db))
      expect(await refusal(app.execute(sql`select count(*) from ${sql.identifier(table)}`))).toMatch(
        /permission denied/,
      );
  });
});

describe('what each role sees', () => {
  it('as a tenant: exactly its own rows in every tenant table, none of the other tenant', async () => {
    for (const { table, column } of await tenantTables(harness.db)) {
      for (const [self, other] of [
        [tenantA, tenantB],
        [tenantB, tenantA],
      ] as const) {
        const owned = await countBy(harness.db, table, column, self.id, true);
        // The fixture must give every tenant table rows of both tenants, or this proves nothing.
        expect(owned, `${table} has rows of ${self.id} (seed it above)`).toBeGreaterThan(0);
        const seen = await asTenant(app, self.id, async (tx) => ({
          own: await countBy(tx, table, column, self.id, true),
          others: await countBy(tx, table, column, self.id, false),
          named: await countBy(tx, table, column, other.id, true),
        }));
        expect({ table, ...seen }).toEqual({ table, own: owned, others: 0, named: 0 });
      }
    }
  });

  it('with no tenant set, the tenant role sees no row of any tenant table', async () => {
    for (const { table } of await tenantTables(harness.db)) {
      const [row] = await asAdmin(app, async (tx) => {
        await tx.execute(sql`select set_config('role', ${TENANT_ROLE}, true)`);
        return rows<{ n: number }>(tx, sql`select count(*)::int as n from ${sql.identifier(table)}`);
      });
      expect({ table, n: row?.n }).toEqual({ table, n: 0 });
    }
  });

  it('a tenant cannot write a row of another tenant, nor move its own row to another tenant', async () => {
    expect(
      await refusal(
        asTenant(app, tenantA.id, (tx) =>
          tx.insert(poolDecisions).values({
            reservationId: 'res_forged',
            tenantId: tenantB.id,
            keyId: 'key_rls',
            requested: 'flagship',
            actual: 'standard',
            reason: 'tier',
            costMicro: 1n,
            createdAt: new Date(),
          }),
        ),
      ),
    ).toMatch(/violates row-level security policy/);
    expect(
      await refusal(
        asTenant(app, tenantA.id, (tx) =>
          tx.execute(sql`update spend set tenant_id = ${tenantB.id} where tenant_id = ${tenantA.id}`),
        ),
      ),
    ).toMatch(/violates row-level security policy/);
    expect(await countBy(harness.db, 'pool_decisions', 'tenant_id', tenantB.id, true)).toBe(1);
    expect(await countBy(harness.db, 'spend', 'tenant_id', tenantB.id, true)).toBe(1);
  });

  it('one spend batch spanning tenants is written, each tenant as itself, every entry balanced', async () => {
    const batch = [tenantA, tenantB, tenantA].map((tenant, i) => ({
      reservationId: `res_batch_${i}_${tenant.id}`,
      tenantId: tenant.id,
      keyId: 'key_rls',
      pool: 'standard',
      promptTokens: 1,
      completionTokens: 2,
      costMicro: 10n + BigInt(i),
      chargedMicro: 10n + BigInt(i),
      free: false,
      settledAt: new Date(),
    }));
    expect(await writeSettledSpend(app, batch)).toBe(3);
    const lines = await rows<{ reference: string; lines: number; sum: string }>(
      harness.db,
      sql`select e.reference, count(p.id)::int as lines, sum(p.amount_micro)::text as sum
        from journal_entries e join postings p on p.entry_id = e.id
        where e.reference like 'res_batch_%' group by e.reference order by e.reference`,
    );
    expect(lines).toEqual(
      batch
        .map((row) => ({ reference: row.reservationId, lines: 2, sum: '0' }))
        .sort((a, b) => (a.reference < b.reference ? -1 : 1)),
    );
  });

  it('a spend batch may write only the tenants it declares', async () => {
    for (const statement of [
      sql`insert into spend (reservation_id, tenant_id, key_id, pool, prompt_tokens, completion_tokens, cost_micro, free, settled, created_at) values ('res_undeclared', ${tenantB.id}, 'k', 'standard', 1, 1, 5, false, true, now())`,
      sql`insert into journal_entries (tenant_id, kind, reference) values (${tenantB.id}, 'spend', 'res_undeclared')`,
      sql`insert into postings (entry_id, account, amount_micro) values (1, ${`tenant:${tenantB.id}:spent`}, 5)`,
    ])
      expect(await refusal(asSpendBatch(app, [tenantA.id], (tx) => tx.execute(statement)))).toMatch(
        /violates row-level security policy/,
      );
    expect(await rows(harness.db, sql`select 1 from spend where reservation_id = 'res_undeclared'`)).toEqual(
      [],
    );
  });

  it('the admin role sees every tenant', async () => {
    const seen = await asAdmin(app, (tx) =>
      rows<{ n: number }>(
        tx,
        sql`select count(distinct tenant_id)::int as n from spend where tenant_id in (${tenantA.id}, ${tenantB.id})`,
      ),
    );
    expect(seen[0]?.n).toBe(2);
  });

  it('ledger lines: a tenant reads its own accounts only, and appends only to its own or the platform', async () => {
    const accounts = await asTenant(app, tenantA.id, (tx) =>
      rows<{ account: string }>(tx, sql`select distinct account from postings order by account`),
    );
    expect(accounts.map((row) => row.account)).toEqual([
      `tenant:${tenantA.id}:available`,
      `tenant:${tenantA.id}:spent`,
    ]);
    const [entry] = await asTenant(app, tenantA.id, (tx) =>
      rows<{ id: string }>(tx, sql`select id::text from journal_entries limit 1`),
    );
    expect(
      await refusal(
        asTenant(app, tenantA.id, (tx) =>
          tx.execute(
            sql`insert into postings (entry_id, account, amount_micro) values (${entry?.id}, ${`tenant:${tenantB.id}:available`}, 5), (${entry?.id}, ${`tenant:${tenantA.id}:available`}, -5)`,
          ),
        ),
      ),
    ).toMatch(/violates row-level security policy/);
    const all = await asAdmin(app, (tx) =>
      rows<{ n: number }>(
        tx,
        sql`select count(distinct split_part(account, ':', 2))::int as n from postings where account like 'tenant:%' and split_part(account, ':', 2) in (${tenantA.id}, ${tenantB.id})`,
      ),
    );
    expect(all[0]?.n).toBe(2);
  });

  it('the tenant role may not make the admin changes: tenants, grants, prices, flags, minting, deletions', async () => {
    for (const statement of [
      sql`update tenants set frozen = false, tier = 9`,
      sql`insert into credit_grants (id, tenant_id, amount_micro, reason, granted_by) values ('g_self', ${tenantA.id}, 1, 'self', 'me')`,
      sql`update pool_prices set micro_per_1k_tokens = 1`,
      sql`update feature_flags set enabled = true`,
      sql`update crypto_payments set minted_at = now()`,
      sql`delete from crypto_payments`,
      sql`delete from api_keys`,
      sql`delete from spend`,
      sql`insert into conservation_checks (tenant_id, checked_at, outcome, drift_micro, credited_drift_micro, committed_drift_micro, before_credited_micro, before_committed_micro, before_outbox_micro, before_reserved_micro, book_credited_micro, book_spent_micro) values (${tenantA.id}, now(), 'ok', 0, 0, 0, 0, 0, 0, 0, 0, 0)`,
    ]) {
      expect(await refusal(asTenant(app, tenantA.id, (tx) => tx.execute(statement)))).toMatch(
        /permission denied/,
      );
    }
    // What a tenant's own request does write is allowed: an invoice's provider references.
    await asTenant(app, tenantA.id, (tx) =>
      tx.execute(sql`update crypto_payments set invoice_url = 'https://x.test'`),
    );
    expect(
      await rows<{ url: string }>(
        harness.db,
        sql`select invoice_url as url from crypto_payments where tenant_id = ${tenantA.id}`,
      ),
    ).toEqual([{ url: 'https://x.test' }]);
  });

  it('a key lookup sees the one key its prefix names and that key tenant, nothing else', async () => {
    const [prefix] = tenantA.keyPrefixes;
    if (prefix === undefined) throw new Error('no key');
    const seen = await asKeyLookup(app, prefix, async (tx) => ({
      keys: await rows<{ prefix: string }>(tx, sql`select prefix from api_keys`),
      tenants: await rows<{ id: string }>(tx, sql`select id from tenants`),
      spend: await rows<{ n: number }>(tx, sql`select count(*)::int as n from spend`),
    }));
    expect(seen).toEqual({ keys: [{ prefix }], tenants: [{ id: tenantA.id }], spend: [{ n: 0 }] });
  });

  it('neither role may UPDATE or DELETE audit rows or ledger lines (the privilege is not granted)', async () => {
    for (const scope of [
      (work: (tx: Db) => Promise<unknown>) => asTenant(app, tenantA.id, work),
      (work: (tx: Db) => Promise<unknown>) => asAdmin(app, work),
    ]) {
      for (const statement of [
        sql`update audit_events set action = 'x'`,
        sql`delete from audit_events`,
        sql`truncate audit_events`,
        sql`update postings set amount_micro = 1`,
        sql`delete from postings`,
        sql`update journal_entries set kind = 'grant'`,
        sql`delete from journal_entries`,
      ]) {
        expect(await refusal(scope((tx) => tx.execute(statement)))).toMatch(/permission denied/);
      }
    }
  });
});

describe('a scope ends with its transaction', () => {
  /** A database whose transactions all run on one connection (PGlite has only one). */
  async function oneConnection(): Promise<{ db: Db; close(): Promise<void> }> {
    const url = harness.shared.database.url;
    if (url === undefined) return { db: harness.db, close: async () => {} };
    const handle = await openPostgres(url, { maxConnections: 1 });
    return { db: handle.db, close: () => handle.close() };
  }

  /**
   * What the next transaction on the connection inherits from a scope that has ended: the role,
   * the settings, and the rows the tenant role then sees without setting anything itself.
   */
  async function leftover(db: Db, scope: (db: Db) => Promise<unknown>) {
    await scope(db);
    const [session] = await rows<{ role: string; tenant: string | null; prefix: string | null }>(
      db,
      sql`select current_user as role, nullif(current_setting('app.current_tenant', true), '') as tenant,
        coalesce(nullif(current_setting('app.key_prefix', true), ''),
          nullif(current_setting('app.spend_batch', true), '')) as prefix`,
    );
    const visible = await db.transaction(async (tx) => {
      await tx.execute(sql`select set_config('role', ${TENANT_ROLE}, true)`);
      const [seen] = await rows<{ n: number }>(
        tx,
        sql`select (select count(*) from spend)::int + (select count(*) from api_keys)::int as n`,
      );
      return seen?.n;
    });
    // Back to a clean session whatever the scope did (RESET cannot run inside a transaction).
    await db.execute(sql`reset role`);
    await db.execute(sql`reset app.current_tenant`);
    await db.execute(sql`reset app.key_prefix`);
    await db.execute(sql`reset app.spend_batch`);
    return { role: session?.role, tenant: session?.tenant ?? null, prefix: session?.prefix ?? null, visible };
  }

  it('no scope leaves anything behind: the next transaction is the login again, with no tenant and no key', async () => {
    const connection = await oneConnection();
    try {
      const [login] = await rows<{ role: string }>(connection.db, sql`select current_user as role`);
      const clean = { role: login?.role, tenant: null, prefix: null, visible: 0 };
      const read = (tx: Db) => tx.execute(sql`select count(*) from spend`);
      expect(await leftover(connection.db, (db) => asTenant(db, tenantA.id, read))).toEqual(clean);
      expect(
        await leftover(connection.db, (db) => asKeyLookup(db, tenantA.keyPrefixes[0] ?? '', read)),
      ).toEqual(clean);
      expect(await leftover(connection.db, (db) => asAdmin(db, read))).toEqual(clean);
      expect(await leftover(connection.db, (db) => asSpendBatch(db, [tenantA.id, tenantB.id], read))).toEqual(
        clean,
      );
    } finally {
      await connection.close();
    }
  });

  it('a session-level SET in its place leaks into the next transaction, and this check catches it', async () => {
    const connection = await oneConnection();
    try {
      const leaky = (db: Db) =>
        db.transaction(async (tx) => {
          // `false`: SET, not SET LOCAL — what a scope must never do.
          await tx.execute(
            sql`select set_config('role', ${TENANT_ROLE}, false), set_config('app.current_tenant', ${tenantA.id}, false)`,
          );
        });
      const after = await leftover(connection.db, leaky);
      // Tenant A's spend rows and keys.
      const ownRows =
        (await countBy(harness.db, 'spend', 'tenant_id', tenantA.id, true)) +
        (await countBy(harness.db, 'api_keys', 'tenant_id', tenantA.id, true));
      expect(ownRows).toBeGreaterThan(0);
      expect(after).toEqual({ role: TENANT_ROLE, tenant: tenantA.id, prefix: null, visible: ownRows });
    } finally {
      await connection.close();
    }
  });
});
