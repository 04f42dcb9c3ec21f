import { and, eq, isNotNull } from 'drizzle-orm';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import { apiKeys, journalEntries, spend } from '../../db/schema/index.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startExternalIdp } from '../support/external-idp.js';
import { freePort } from '../support/redis-server.js';
import { events } from '../support/sse.js';

/** The Workers entry run in Node: the same fetch handler workerd calls, with string bindings. */
type WorkerModule = typeof import('../../src/entry/worker.js');
const context = { waitUntil: () => {} };

async function freshWorker(): Promise<WorkerModule['default']> {
  // The entry memoises its isolate state; a fresh module is a fresh isolate.
  vi.resetModules();
  return (await import('../../src/entry/worker.js')).default;
}

async function errorOf(response: Response) {
  return ((await response.json()) as { error: Record<string, unknown> }).error;
}

describe('Workers entry with a bad configuration', () => {
  beforeEach(() => vi.resetModules());

  it('answers every request 503 naming the variable, never its value', async () => {
    const worker = await freshWorker();
    const response = await worker.fetch(
      new Request('http://gateway/health'),
      { DATABASE_URL: 'postgres://u@127.0.0.1:1/x', ADMIN_TOKEN: 'too-short-secret' },
      context,
    );
    expect(response.status).toBe(503);
    const error = await errorOf(response);
    expect(error).toMatchObject({ code: 'not_ready', variable: 'ADMIN_TOKEN' });
    expect(JSON.stringify(error)).not.toContain('too-short-secret');
  });

  it('requires DATABASE_URL: there is no embedded database on Workers', async () => {
    const worker = await freshWorker();
    const response = await worker.fetch(new Request('http://gateway/ready'), {}, context);
    expect(response.status).toBe(503);
    expect(await errorOf(response)).toMatchObject({ variable: 'DATABASE_URL' });
  });
});

/** A private ES256 JWK as SIGNING_PRIVATE_JWKS takes it. */
async function signingJwks(): Promise<string> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return JSON.stringify([await exportJWK(privateKey)]);
}

describe('Workers entry without signing keys', () => {
  it('requires SIGNING_PRIVATE_JWKS, naming it (an isolate-made key would die with the isolate)', async () => {
    const worker = await freshWorker();
    const env = {
      DATABASE_URL: 'postgres://u@127.0.0.1:1/x',
      LOG_LEVEL: 'silent',
      API_KEY_PEPPERS: `1:${'p'.repeat(40)}`,
    };
    const response = await worker.fetch(new Request('http://gateway/health'), env, context);
    expect(response.status).toBe(503);
    expect(await errorOf(response)).toMatchObject({ code: 'not_ready', variable: 'SIGNING_PRIVATE_JWKS' });
    const empty = await (await freshWorker()).fetch(
      new Request('http://gateway/health'),
      { ...env, SIGNING_PRIVATE_JWKS: '[]' },
      context,
    );
    expect(await errorOf(empty)).toMatchObject({ variable: 'SIGNING_PRIVATE_JWKS' });
  });
});

describe('Workers entry with a configuration', () => {
  let database: TestDatabase | undefined;
  let databaseUrl: string;
  let jwks: string;
  /** The bindings of a working Worker (its database, peppers, signing keys), plus `extra`. */
  const configured = (extra: Record<string, string> = {}) => ({
    DATABASE_URL: databaseUrl,
    LOG_LEVEL: 'silent',
    API_KEY_PEPPERS: `1:${'p'.repeat(40)}`,
    SIGNING_PRIVATE_JWKS: jwks,
    ...extra,
  });
  beforeAll(async () => {
    jwks = await signingJwks();
    const serverUrl = inject('databaseUrl');
    if (serverUrl === '') {
      // PGlite-only run: no PostgreSQL server to reach, so the Worker points at a closed port.
      databaseUrl = `postgres://postgres@127.0.0.1:${await freePort()}/none`;
    } else {
      database = await createTestDatabase(serverUrl);
      databaseUrl = database.url as string;
    }
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('serves /health and reports the database in /ready', async () => {
    const worker = await freshWorker();
    const env = configured();
    const health = await worker.fetch(new Request('http://gateway/health'), env, context);
    expect(health.status).toBe(200);
    const ready = await worker.fetch(new Request('http://gateway/ready'), env, context);
    const body = (await ready.json()) as { checks?: unknown; error?: { checks: unknown } };
    if (database === undefined) {
      expect(ready.status).toBe(503);
      expect(body.error?.checks).toMatchObject({ database: { ok: false, engine: 'postgres' } });
    } else {
      expect(ready.status).toBe(200);
      expect(body.checks).toMatchObject({
        database: { ok: true, engine: 'postgres' },
        store: { engine: 'memory' },
      });
    }
  });

  it('the scheduled handler runs the jobs due under their leases, once per interval per isolate', async () => {
    if (database === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const worker = await freshWorker();
    const env = configured();
    const waited: Promise<unknown>[] = [];
    const scheduledContext = { waitUntil: (promise: Promise<unknown>) => void waited.push(promise) };
    const runs = async () => {
      const text = await (await worker.fetch(new Request('http://gateway/metrics'), env, context)).text();
      const ok = (job: string) =>
        Number(
          new RegExp(`spicegate_job_runs_total\\{job="${job}",outcome="ok"\\} (\\d+)`).exec(text)?.[1] ?? 0,
        );
      return { reaper: ok('reaper'), drain: ok('outbox-drain'), conservation: ok('conservation') };
    };
    expect(await runs()).toEqual({ reaper: 0, drain: 0, conservation: 0 });

    await worker.scheduled({ scheduledTime: Date.now() }, env, scheduledContext);
    await Promise.all(waited);
    expect(waited).toHaveLength(1);
    expect(await runs()).toEqual({ reaper: 1, drain: 1, conservation: 1 });
    // The next tick within their intervals runs none of them again (the isolate remembers).
    await worker.scheduled({ scheduledTime: Date.now() }, env, scheduledContext);
    await Promise.all(waited);
    expect(await runs()).toEqual({ reaper: 1, drain: 1, conservation: 1 });
  });

  /**
   * A Worker over this file's database, as workerd would drive it: every promise the entry hands to
   * `ctx.waitUntil` is kept, so a test awaits exactly what the runtime would keep alive.
   */
  async function workerWithTenant(extra: Record<string, string> = {}) {
    if (database === undefined) throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
    const worker = await freshWorker();
    const adminToken = 'a'.repeat(40);
    // A burst of 100: the requests below come back to back.
    const env = configured({ ADMIN_TOKEN: adminToken, TIERS: '{"4":{"burstCapacity":100}}', ...extra });
    const waited: Promise<unknown>[] = [];
    const ctx = { waitUntil: (promise: Promise<unknown>) => void waited.push(promise) };
    /** Awaits what the runtime would, including what was handed over while waiting. */
    const settle = async () => {
      for (let done = 0; done < waited.length; ) {
        const batch = waited.slice(done);
        done = waited.length;
        await Promise.all(batch);
      }
    };
    const fetch = (path: string, init: RequestInit = {}) =>
      worker.fetch(new Request(`http://gateway${path}`, init), env, ctx);
    const mutate = async <T>(path: string, input: unknown, token = adminToken): Promise<T> => {
      const response = await fetch(`/trpc/${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(input),
      });
      const body = (await response.json()) as { result?: { data: T } };
      if (body.result === undefined) throw new Error(`${path}: ${JSON.stringify(body)}`);
      return body.result.data;
    };
    const tenant = await mutate<{ id: string }>('admin.tenants.create', { name: 'Worker', tier: 4 });
    await mutate('admin.credits.grant', {
      tenantId: tenant.id,
      amountMicro: '5000000',
      reason: 'worker test',
    });
    const { key } = await mutate<{ key: string }>('keys.create', { tenantId: tenant.id, name: 'worker key' });
    const balance = async () => {
      const response = await fetch(
        `/trpc/billing.balance?input=${encodeURIComponent(JSON.stringify({ tenantId: tenant.id }))}`,
        { headers: { authorization: `Bearer ${adminToken}` } },
      );
      return (
        (await response.json()) as { result: { data: { reservedMicro: string; committedMicro: string } } }
      ).result.data;
    };
    const infer = (body: unknown, path = '/api/v1/inference') =>
      fetch(path, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    await settle();
    return { db: database.handle.db, tenantId: tenant.id, infer, balance, settle, waited };
  }

  it('writes every settled request to PostgreSQL within its waitUntil: spend rows, journal entries, key use', async () => {
    const { db, tenantId, infer, settle } = await workerWithTenant();
    const reservations: string[] = [];
    for (let i = 0; i < 5; i += 1) {
      const done = events(await (await infer({ prompt: `hello ${i}`, max_tokens: 8 })).text()).at(-1);
      expect(done?.type).toBe('done');
      reservations.push(done?.reservation_id as string);
    }
    for (let i = 0; i < 2; i += 1) {
      const response = await infer(
        { model: 'standard', messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 8 },
        '/v1/chat/completions',
      );
      expect(response.status).toBe(200);
      const { id } = (await response.json()) as { id: string };
      reservations.push(id.replace(/^chatcmpl-/, ''));
    }
    await settle();

    const rows = await db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(rows.map((row) => row.reservationId).sort()).toEqual([...reservations].sort());
    expect(rows.every((row) => row.settled && row.costMicro > 0n)).toBe(true);
    const entries = await db
      .select()
      .from(journalEntries)
      .where(and(eq(journalEntries.tenantId, tenantId), eq(journalEntries.kind, 'spend')));
    expect(entries.map((entry) => entry.reference).sort()).toEqual([...reservations].sort());
    const used = await db
      .select()
      .from(apiKeys)
      .where(and(eq(apiKeys.tenantId, tenantId), isNotNull(apiKeys.lastUsedAt)));
    expect(used).toHaveLength(1);
  });

  it('settles a stream whose client hung up: the reservation back to 0 and the delivered tokens charged', async () => {
    const { db, tenantId, infer, settle, balance } = await workerWithTenant({
      LOCAL_MODEL_TOKENS: '1000',
      LOCAL_MODEL_DELAY_MS: '20',
    });
    const response = await infer({ prompt: 'a long answer', max_tokens: 1000 });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect((await balance()).reservedMicro).not.toBe('0');
    await reader.cancel();
    await settle();

    // Read before any other request: its own waitUntil must have written the row.
    const [row] = await db.select().from(spend).where(eq(spend.tenantId, tenantId));
    expect(row?.settled).toBe(true);
    expect(row?.completionTokens).toBeGreaterThan(0);
    expect(row?.completionTokens).toBeLessThan(1000);
    expect(await balance()).toMatchObject({ reservedMicro: '0', committedMicro: String(row?.costMicro) });
  });

  it("fetches an external issuer's JWKS once per isolate, not once per request", async () => {
    const idp = await startExternalIdp();
    try {
      const worker = await freshWorker();
      const env = configured({
        AUTH_JWKS_URL: idp.url,
        AUTH_ISSUER: 'https://idp.example',
        AUTH_AUDIENCE: 'spicegate-api',
      });
      const token = await new SignJWT({ role: 'operator' })
        .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: idp.kid })
        .setIssuer('https://idp.example')
        .setAudience('spicegate-api')
        .setSubject('sso-user')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(idp.key);
      for (let i = 0; i < 3; i += 1) {
        const response = await worker.fetch(
          new Request('http://gateway/trpc/admin.system.info', {
            headers: { authorization: `Bearer ${token}` },
          }),
          env,
          context,
        );
        // The operator's token is accepted (the database may be down in a PGlite-only run).
        expect(response.status).not.toBe(401);
      }
      expect(idp.fetches()).toBe(1);
    } finally {
      await idp.close();
    }
  });
});
