import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { createKey } from '../../src/keys/keys.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { drainOutbox } from '../../src/ledger/outbox.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';
import { createHarnessOnOwnRedis, type Harness } from '../support/harness.js';
import type { RedisServer } from '../support/redis-server.js';
import { events } from '../support/sse.js';
import { trpc } from '../support/trpc.js';

/**
 * Issue 14: no settled charge lives only in a process's memory. A real gateway process (the bin,
 * on PostgreSQL and a redis-server of this test's own) settles 20 requests and is SIGKILLed the
 * moment the 20th response has been read, before its 1 s drain could run. Another instance (the
 * harness's Services over the same database and Redis) drains the tenant's outbox: every charge
 * reaches PostgreSQL, to the micro-credit.
 */
describe('20 settled requests, then SIGKILL of the gateway', () => {
  let other: Harness & { redis: RedisServer };
  let gateway: GatewayProcess;
  let dataDir: string;
  let url: string;
  let tenantId: string;
  let key: string;

  beforeAll(async () => {
    other = await createHarnessOnOwnRedis();
    const databaseUrl = other.shared.database.url;
    if (databaseUrl === undefined) throw new Error('this test needs PostgreSQL: set DATABASE_URL');
    tenantId = (await createTenant(other.services, { name: 'Killed', tier: 7 })).id;
    const granted = await trpc(
      other,
      other.adminToken,
      'admin.credits.grant',
      { tenantId, amountMicro: '1000000', reason: 'kill test', grantId: `grant-${tenantId}` },
      'POST',
    );
    expect(granted.status).toBe(200);
    key = (await createKey(other.services, tenantId, { name: 'k', rpmLimit: 10_000 })).key;

    dataDir = await mkdtemp(join(tmpdir(), 'sg-kill-'));
    gateway = spawnSpicegate(['serve'], {
      PORT: '0',
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      REDIS_URL: other.redis.url,
      // The key was hashed by the harness: the gateway verifies it with the same pepper.
      API_KEY_PEPPERS: other.shared.peppers,
    });
    url = String((await gateway.waitForLog('listening')).url);
    await gateway.waitForLog('spicegate ready');
  });
  afterAll(async () => {
    gateway?.kill();
    await other?.close();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it('every charge reaches PostgreSQL: Σ cost of the responses = Σ spend rows = the ledger’s spent', async () => {
    const responses: { reservationId: string; costMicro: bigint }[] = [];
    for (let i = 0; i < 20; i += 1) {
      const response = await fetch(`${url}/api/v1/inference`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        // A user each: the burst bucket is per user, so 20 quick requests are all admitted.
        body: JSON.stringify({ prompt: `request number ${i}`, max_tokens: 4 + (i % 5), user: `u${i}` }),
      });
      expect(response.status).toBe(200);
      const done = events(await response.text()).at(-1);
      expect(done).toMatchObject({ type: 'done', reservation_id: expect.stringMatching(/^res_/) });
      expect(done?.settlement).toBeUndefined();
      responses.push({
        reservationId: done?.reservation_id ?? '',
        costMicro: BigInt(done?.cost_micro ?? ''),
      });
    }
    // At once: no time for the killed process's own drain.
    gateway.child.kill('SIGKILL');
    expect((await gateway.exited).signal).toBe('SIGKILL');

    const charged = responses.reduce((sum, response) => sum + response.costMicro, 0n);
    expect(charged).toBeGreaterThan(0n);
    const { db } = other;
    const { store } = other.services;
    const rows = () => db.select().from(spend).where(eq(spend.tenantId, tenantId));

    // Before anyone drains: every settlement is in PostgreSQL already or waits in the store's
    // outbox (both, for a drain the kill cut between its write and its acknowledgement).
    const read = await store.outboxRead({ tenantId, count: 1000 });
    if (read.status !== 'OUTBOX') throw new Error(read.field);
    const recorded = new Set([
      ...(await rows()).map((row) => row.reservationId),
      ...read.entries.map((entry) => entry.reservationId),
    ]);
    expect([...recorded].sort()).toEqual(responses.map((response) => response.reservationId).sort());

    // Another instance drains the tenant's outbox.
    await drainOutbox(db, store, [tenantId]);

    const written = await rows();
    expect(written).toHaveLength(20);
    expect(written.every((row) => row.settled)).toBe(true);
    expect(written.reduce((sum, row) => sum + row.costMicro, 0n)).toBe(charged);
    expect(await accountBalance(db, accounts.spent(tenantId))).toBe(charged);
    expect(await accountBalance(db, accounts.available(tenantId))).toBe(1_000_000n - charged);
    // The store agrees, and no charge is left waiting.
    expect(await store.snapshot(tenantId)).toMatchObject({ committedMicro: charged, reservedMicro: 0n });
    expect(await store.outboxRead({ tenantId, count: 1000 })).toEqual({ status: 'OUTBOX', entries: [] });
    const redis = new Redis(other.redis.url);
    try {
      expect(await redis.hget(`${tenantKey(tenantId)}:bal`, 'outbox')).toBe('0');
    } finally {
      redis.disconnect();
    }
  });
});
