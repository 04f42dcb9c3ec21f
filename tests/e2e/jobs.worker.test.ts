import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient } from '../../src/client.js';
import { silentLogger } from '../../src/observability/logger.js';
import { redisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/typed-store.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';

/**
 * The jobs in real processes (the real `spicegate` bin): `spicegate worker` competing for the
 * reaper's lease, a holder frozen (SIGSTOP) past its lease, a gateway killed mid-stream whose
 * reservation another instance's reaper releases, and `serve` with and without JOBS. Each test has
 * a redis-server of its own; the processes share one PostgreSQL database and one DATA_DIR (the
 * signing keys every instance must share).
 */
type Line = Record<string, unknown>;

let database: TestDatabase;
let dataDir: string;
const adminToken = randomBytes(32).toString('base64url');
const peppers = `1:${randomBytes(32).toString('base64url')}`;
const processes: GatewayProcess[] = [];
const servers: RedisServer[] = [];

beforeAll(async () => {
  const serverUrl = inject('databaseUrl');
  if (serverUrl === '') {
    throw new Error('these tests need DATABASE_URL (PostgreSQL): `spicegate worker` shares its database');
  }
  database = await createTestDatabase(serverUrl);
  dataDir = await mkdtemp(join(tmpdir(), 'sg-jobs-'));
});
afterEach(async () => {
  for (const child of processes.splice(0)) child.kill();
  for (const server of servers.splice(0)) await server.stop();
});
afterAll(async () => {
  await database?.drop();
  if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
});

async function ownRedis(): Promise<{ server: RedisServer; client: Redis; store: Store }> {
  const server = await startRedisServer();
  servers.push(server);
  const client = new Redis(server.url);
  client.on('error', () => {});
  const store = redisStore({ url: server.url, log: silentLogger() });
  return { server, client, store };
}

function spawn(args: string[], redisUrl: string, env: Record<string, string>): GatewayProcess {
  const child = spawnSpicegate(args, {
    DATABASE_URL: database.url as string,
    REDIS_URL: redisUrl,
    DATA_DIR: dataDir,
    API_KEY_PEPPERS: peppers,
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: 'debug',
    ...env,
  });
  processes.push(child);
  return child;
}

/** Resolves with the first line (already written or still to come) that `match` accepts. */
async function waitForLine(
  child: GatewayProcess,
  match: (line: Line) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<Line> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = child.lines.find(match);
    if (found !== undefined) return found;
    if (child.child.exitCode !== null || child.child.signalCode !== null)
      throw new Error(`exited before logging ${what}; stderr: ${child.stderr()}`);
    if (Date.now() > deadline) throw new Error(`no ${what} after ${timeoutMs} ms; stderr: ${child.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const reaper = (msg: string) => (line: Line) => line.msg === msg && line.job === 'reaper';
const reaperLines = (child: GatewayProcess, msg: string) => child.lines.filter(reaper(msg));

describe('spicegate worker', () => {
  it('two workers compete for the reaper: one runs each cycle; a holder frozen past its lease is fenced off (STALE)', async () => {
    const { server, client } = await ownRedis();
    // 5,000 tenants in the index: a reaper cycle lasts about a second here, long enough to freeze
    // its holder inside it.
    const nowMs = Date.now();
    for (let chunk = 0; chunk < 5; chunk += 1) {
      const ids = Array.from({ length: 1_000 }, (_, i) => `ten_seed_${chunk}_${i}`);
      await client.zadd('{i:tenants}', ...ids.flatMap((id) => [nowMs, id]));
      await client.zadd('{i:tenants}:ids', ...ids.flatMap((id) => [0, id]));
    }
    const env = { REAPER_INTERVAL_MS: '300' };
    const a = spawn(['worker'], server.url, env);
    const acquiredByA = await waitForLine(a, reaper('job lease acquired'), 'a: reaper lease acquired');
    const b = spawn(['worker'], server.url, env);
    await waitForLine(b, reaper('job lease held elsewhere'), 'b: reaper lease held elsewhere');
    await waitForLine(a, () => reaperLines(a, 'job run').length >= 2, 'a: two reaper cycles');
    expect(reaperLines(b, 'job run')).toEqual([]);

    // Freeze a inside a cycle (one has just started), past its lease (3 × 300 ms): b takes over.
    const started = reaperLines(a, 'job started').length;
    await waitForLine(a, () => reaperLines(a, 'job started').length > started, 'a: a new reaper cycle');
    a.child.kill('SIGSTOP');
    const acquiredByB = await waitForLine(b, reaper('job lease acquired'), 'b: reaper lease acquired');
    await waitForLine(b, reaper('job run'), 'b: a reaper cycle');
    a.child.kill('SIGCONT');

    // a's next write meets fencing_cas: refused, and a stops writing.
    const lost = await waitForLine(a, reaper('job lease lost: its writes stopped'), 'a: lease lost');
    expect(lost).toMatchObject({ status: 'STALE', holder: acquiredByA.holder, fencingToken: 1 });
    expect(acquiredByB).toMatchObject({ fencingToken: 2 });
    // From then on a is refused the lease and runs no cycle while b holds it.
    const lostAt = a.lines.indexOf(lost);
    await waitForLine(
      a,
      (line) => reaper('job lease held elsewhere')(line) && a.lines.indexOf(line) > lostAt,
      'a: lease held elsewhere after losing it',
    );
    // Every completed cycle ran under its holder's own token: a's with 1, b's with 2.
    expect(new Set(reaperLines(a, 'job run').map((line) => line.fencingToken))).toEqual(new Set([1]));
    expect(new Set(reaperLines(b, 'job run').map((line) => line.fencingToken))).toEqual(new Set([2]));
    expect(a.lines.slice(lostAt).filter(reaper('job run'))).toEqual([]);

    // A clean stop gives the lease back.
    b.child.kill('SIGTERM');
    a.child.kill('SIGTERM');
    expect((await b.exited).code).toBe(0);
    expect((await a.exited).code).toBe(0);
    expect(await client.exists('{l:job-reaper}:lease')).toBe(0);
    client.disconnect();
  }, 120_000);

  it('releases the reservation of a gateway killed mid-stream (JOBS=off there: it took no lease)', async () => {
    const { server, client, store } = await ownRedis();
    // A slow stream (100 ms a token), a short reservation TTL, and jobs off in the gateway.
    const gateway = spawn(['serve'], server.url, {
      PORT: '0',
      JOBS: 'off',
      REAPER_INTERVAL_MS: '100',
      RESERVATION_TTL_MS: '2000',
      LOCAL_MODEL_DELAY_MS: '100',
      LOCAL_MODEL_TOKENS: '1000',
    });
    const url = String((await gateway.waitForLog('listening')).url);
    await gateway.waitForLog('spicegate ready');
    const admin = createClient({ url, token: adminToken });
    const tenant = await admin.admin.tenants.create.mutate({ name: 'Killed mid-stream', tier: 4 });
    await admin.admin.credits.grant.mutate({ tenantId: tenant.id, amountMicro: '1000000', reason: 'test' });
    const { key } = await admin.keys.create.mutate({ tenantId: tenant.id, name: 'k' });

    const response = await fetch(`${url}/api/v1/inference`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a slow stream', max_tokens: 500 }),
    });
    expect(response.status).toBe(200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let received = '';
    while (!received.includes('"type":"token"')) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended before its first token');
      received += new TextDecoder().decode(value);
    }
    const held = await store.snapshot(tenant.id);
    expect(held.reservedMicro).toBeGreaterThan(0n);
    expect(held.availableMicro).toBe(1_000_000n - held.reservedMicro);

    // JOBS=off: with a 100 ms reaper interval and seconds up, the gateway never took a job lease.
    expect(await client.exists('{l:job-reaper}:token', '{l:job-unsettled-spend}:token')).toBe(0);
    expect(await gateway.waitForLog('background jobs started')).toMatchObject({
      jobs: ['signing-maintenance'],
    });

    gateway.child.kill('SIGKILL');
    await gateway.exited;
    await reader.cancel().catch(() => undefined);
    // Nobody settles it now: still held.
    expect((await store.snapshot(tenant.id)).reservedMicro).toBe(held.reservedMicro);

    const worker = spawn(['worker'], server.url, { REAPER_INTERVAL_MS: '300', RESERVATION_TTL_MS: '2000' });
    const released = await waitForLine(
      worker,
      (line) => line.msg === 'reaper cycle' && line.released === 1,
      'worker: the reservation released',
    );
    expect(released).toMatchObject({ releasedMicro: held.reservedMicro.toString(), failed: 0 });
    // The first reaper lease ever taken on this store: the gateway had none.
    expect(await waitForLine(worker, reaper('job lease acquired'), 'worker: reaper lease')).toMatchObject({
      fencingToken: 1,
    });
    expect(await store.snapshot(tenant.id)).toEqual({
      creditedMicro: 1_000_000n,
      committedMicro: 0n,
      reservedMicro: 0n,
      availableMicro: 1_000_000n,
      outboxMicro: 0n,
      present: true,
    });

    worker.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    await store.close();
    client.disconnect();
  }, 120_000);

  it('serve runs the jobs by default and gives their leases back at SIGTERM', async () => {
    const { server, client } = await ownRedis();
    const gateway = spawn(['serve'], server.url, { PORT: '0', REAPER_INTERVAL_MS: '100' });
    await gateway.waitForLog('spicegate ready');
    const started = await gateway.waitForLog('background jobs started');
    expect(started.jobs).toEqual([
      'reaper',
      'outbox-drain',
      'unsettled-spend',
      'conservation',
      'payment-credits',
      'payment-reconciliation',
      'signing-maintenance',
    ]);
    await waitForLine(gateway, reaper('job run'), 'serve: a reaper cycle');
    expect(await client.exists('{l:job-reaper}:lease')).toBe(1);

    gateway.child.kill('SIGTERM');
    expect((await gateway.exited).code).toBe(0);
    expect(
      await client.exists(
        '{l:job-reaper}:lease',
        '{l:job-outbox-drain}:lease',
        '{l:job-unsettled-spend}:lease',
        '{l:job-conservation}:lease',
        '{l:job-payment-credits}:lease',
      ),
    ).toBe(0);
    client.disconnect();
  }, 60_000);

  it('refuses to start on embedded defaults (exit 2, naming what it needs)', async () => {
    const child = spawnSpicegate(['worker'], { DATA_DIR: dataDir });
    processes.push(child);
    const exit = await child.exited;
    expect(exit.code).toBe(2);
    expect(child.stderr()).toContain('DATABASE_URL');
  });
});
