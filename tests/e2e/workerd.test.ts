import { and, eq } from 'drizzle-orm';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { journalEntries, spend } from '../../db/schema/index.js';
import { createLogger } from '../../src/observability/logger.js';
import type { Store } from '../../src/store/typed-store.js';
import { upstashStore } from '../../src/store/upstash.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { admitInput } from '../support/engines.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { events } from '../support/sse.js';
import { startUpstashServer, type UpstashServer } from '../support/upstash-server.js';
import { startWranglerDev, type WranglerDev } from '../support/wrangler-dev.js';

/**
 * The Worker in workerd (`wrangler dev --local`, offline) as a deployer runs it: Upstash REST (an
 * Upstash-compatible server in front of a redis-server of its own, started empty: no script
 * loaded), PostgreSQL migrated beforehand, the secrets in `.dev.vars`. What it proves lies past
 * Node's reach: money work under workerd's `ctx.waitUntil`, a hang-up as workerd reports it, the
 * cron handler, the signing key shared by two starts.
 */
const ADMIN_TOKEN = 'w'.repeat(40);

let database: TestDatabase;
let redis: RedisServer;
let upstash: UpstashServer;
let dev: WranglerDev;
let vars: Record<string, string>;
let store: Store;

beforeAll(async () => {
  const serverUrl = inject('databaseUrl');
  if (serverUrl === '') throw new Error('this test needs the PostgreSQL server (DATABASE_URL)');
  database = await createTestDatabase(serverUrl);
  redis = await startRedisServer();
  upstash = await startUpstashServer(redis.url);
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  vars = {
    DATABASE_URL: database.url as string,
    ADMIN_TOKEN,
    API_KEY_PEPPERS: `1:${'p'.repeat(40)}`,
    SIGNING_PRIVATE_JWKS: JSON.stringify([await exportJWK(privateKey)]),
    UPSTASH_REDIS_REST_URL: upstash.url,
    UPSTASH_REDIS_REST_TOKEN: upstash.token,
    LOG_LEVEL: 'warn',
    // 20 ms a token: a request of 8 takes ~0.2 s, one of 500 is cut by its caller mid-stream.
    LOCAL_MODEL_TOKENS: '500',
    LOCAL_MODEL_DELAY_MS: '20',
    // The requests below come back to back.
    TIERS: '{"4":{"burstCapacity":100}}',
  };
  dev = await startWranglerDev(vars);
  store = upstashStore({ url: upstash.url, token: upstash.token, log: createLogger({ level: 'silent' }) });
}, 90_000);

afterAll(async () => {
  await dev?.stop();
  await upstash?.stop();
  await redis?.stop();
  await database?.drop();
});

async function trpc<T>(path: string, input: unknown, token = ADMIN_TOKEN, url = dev.url): Promise<T> {
  const response = await fetch(`${url}/trpc/${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(input),
  });
  const body = (await response.json()) as { result?: { data: T } };
  if (body.result === undefined) throw new Error(`${path} ${response.status}: ${JSON.stringify(body)}`);
  return body.result.data;
}

async function balance(tenantId: string): Promise<{ reservedMicro: string; committedMicro: string }> {
  const input = encodeURIComponent(JSON.stringify({ tenantId }));
  const response = await fetch(`${dev.url}/trpc/billing.balance?input=${input}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return ((await response.json()) as { result: { data: { reservedMicro: string; committedMicro: string } } })
    .result.data;
}

/** What the Worker logged as errors (pino's error lines, workerd's own: a cross-request I/O among them). */
function workerErrors(started: WranglerDev): string[] {
  return started
    .output()
    .split('\n')
    .filter((line) => line.includes('[ERROR]') || line.includes('Cannot perform I/O'));
}

/** Polls `read` until `done` holds of its value (the Worker writes in waitUntil, after answering). */
async function eventually<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  withinMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('the Worker in workerd (wrangler dev --local) on Upstash REST and PostgreSQL', () => {
  let tenantId: string;
  let key: string;
  const infer = (body: unknown, path = '/api/v1/inference', signal?: AbortSignal) =>
    fetch(`${dev.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      ...(signal === undefined ? {} : { signal }),
    });
  const spendRows = () => database.handle.db.select().from(spend).where(eq(spend.tenantId, tenantId));

  it("runs the README's minute and writes every settled request to the book", async () => {
    ({ id: tenantId } = await trpc<{ id: string }>('admin.tenants.create', { name: 'Edge', tier: 4 }));
    // The store is cold: the grant's script is not loaded yet (NOSCRIPT, then EVAL).
    const grant = await trpc<{ availableMicro: string }>('admin.credits.grant', {
      tenantId,
      amountMicro: '5000000',
      reason: 'workerd',
    });
    expect(grant.availableMicro).toBe('5000000');
    ({ key } = await trpc<{ key: string }>('keys.create', { tenantId, name: 'edge key' }));

    const reservations: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const response = await infer({ prompt: `Hello ${i}`, max_tokens: 8 });
      expect(response.status).toBe(200);
      const done = events(await response.text()).at(-1);
      expect(done).toMatchObject({ type: 'done', usage: { completion_tokens: 8 } });
      reservations.push(done?.reservation_id as string);
    }
    for (const stream of [false, true]) {
      const response = await infer(
        { model: 'standard', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, stream },
        '/v1/chat/completions',
      );
      expect(response.status).toBe(200);
      const text = await response.text();
      const id = stream
        ? (JSON.parse(text.split('\n')[0]?.slice('data: '.length) ?? '{}') as { id: string }).id
        : (JSON.parse(text) as { id: string }).id;
      reservations.push(id.replace(/^chatcmpl-/, ''));
    }

    // Written in each request's waitUntil, after its answer: the rows follow within moments.
    const rows = await eventually(spendRows, (found) => found.filter((row) => row.settled).length >= 5);
    expect(
      rows
        .filter((row) => row.settled)
        .map((row) => row.reservationId)
        .sort(),
    ).toEqual([...reservations].sort());
    const entries = await database.handle.db
      .select()
      .from(journalEntries)
      .where(and(eq(journalEntries.tenantId, tenantId), eq(journalEntries.kind, 'spend')));
    expect(entries.map((entry) => entry.reference).sort()).toEqual([...reservations].sort());
    const charged = rows.reduce((sum, row) => sum + row.costMicro, 0n);
    expect(await balance(tenantId)).toMatchObject({ reservedMicro: '0', committedMicro: String(charged) });
  });

  it('settles a stream whose client hung up, reservation back to 0 within seconds', async () => {
    const before = (await spendRows()).length;
    const hangUp = new AbortController();
    const response = await infer({ prompt: 'a long answer', max_tokens: 500 }, undefined, hangUp.signal);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect((await balance(tenantId)).reservedMicro).not.toBe('0');
    hangUp.abort();

    const settled = await eventually(
      () => balance(tenantId),
      (figures) => figures.reservedMicro === '0',
      5_000,
    );
    expect(settled.reservedMicro).toBe('0');
    const rows = await eventually(spendRows, (found) => found.length > before);
    const cut = rows.find((row) => row.completionTokens < 500);
    expect(cut?.settled).toBe(true);
    expect(cut?.completionTokens).toBeGreaterThan(0);
  });

  it('reaps an expired reservation from the cron handler (/__scheduled)', async () => {
    const nowMs = Date.now();
    // A request that died without settling: admitted 10 s ago with the shortest TTL (1 s).
    const admitted = await store.admit(admitInput(tenantId, { nowMs: nowMs - 10_000, ttlMs: 1_000 }));
    expect(admitted.status).toBe('ADMITTED');
    await store.markTenant({ tenantId, nowMs });
    expect((await store.snapshot(tenantId)).reservedMicro).toBe(100n);

    const tick = await fetch(`${dev.url}/__scheduled?cron=${encodeURIComponent('* * * * *')}`);
    expect(tick.status).toBe(200);
    const after = await eventually(
      () => store.snapshot(tenantId),
      (snapshot) => snapshot.reservedMicro === 0n,
      5_000,
    );
    expect(after.reservedMicro, dev.output()).toBe(0n);
    expect(workerErrors(dev)).toEqual([]);
  });

  it('signs with the shared key after a restart: same kid, and a token issued before still verifies', async () => {
    const kids = async () =>
      ((await (await fetch(`${dev.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }).keys
        .map((jwk) => jwk.kid)
        .sort();
    const before = await kids();
    expect(before).toHaveLength(1);
    const { token } = await trpc<{ token: string }>('admin.tokens.issue', {
      role: 'operator',
      ttlSeconds: 600,
    });

    await dev.stop();
    dev = await startWranglerDev(vars);

    expect(await kids()).toEqual(before);
    const info = await fetch(`${dev.url}/trpc/admin.system.info`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(info.status).toBe(200);
    expect(workerErrors(dev)).toEqual([]);
  }, 60_000);
});
