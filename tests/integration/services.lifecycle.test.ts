import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { parseConfig } from '../../src/config.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { createLogger } from '../../src/observability/logger.js';
import { assembleServices, type Lifecycle, type Services } from '../../src/services.js';
import { localSigner } from '../../src/signing/signer.js';
import { memoryStore, type Store } from '../../src/store/index.js';
import type { Upstream } from '../../src/upstream/port.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { settleOneHeld, startBalance } from '../support/engines.js';
import { createHarness } from '../support/harness.js';

/** services.start() and services.stop(): the one sequence the Node entry, Workers and tests run. */
type LogRecord = Record<string, unknown> & { msg?: string };

// One database for the file; each Services below writes spend rows under a tenant of its own.
let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase(inject('databaseUrl'));
});
afterAll(async () => {
  await database.drop();
});

/** Services whose database close() records how many of their spend rows were written by then. */
async function servicesWith(lifecycle: Lifecycle, store?: Store) {
  const parsed = parseConfig({});
  if (!parsed.ok) throw new Error(parsed.message);
  const { handle } = database;
  const tenantId = `t_${randomBytes(6).toString('hex')}`;
  const events: string[] = [];
  const logs: LogRecord[] = [];
  const log = createLogger({
    level: 'debug',
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as LogRecord) },
  });
  const services = assembleServices({
    config: parsed.config,
    database: {
      db: handle.db,
      engine: handle.engine,
      close: async () => {
        const rows = await handle.db.select().from(spend).where(eq(spend.tenantId, tenantId));
        events.push(`database closed with ${rows.length} spend rows`);
      },
    },
    store: store ?? memoryStore({ log }),
    signer: await localSigner(),
    peppers: parsePeppers(`1:${randomBytes(32).toString('base64url')}`) as Peppers,
    log,
    lifecycle,
  });
  return { services, events, logs, tenantId };
}

/** A request settled in the store (its row also in the tenant's outbox), held by the recorder. */
async function settle(services: Services, tenantId: string): Promise<void> {
  const { row, outboxEntryId } = await settleOneHeld(services.store, tenantId, { actualCostMicro: 7n });
  services.spend.settled(row, outboxEntryId);
}

/** The tenant's store balance, as tenant creation writes it, with credits to spend. */
async function fund(services: Services, tenantId: string): Promise<void> {
  await startBalance(services.store, tenantId);
  await services.store.credit({ tenantId, grantId: 'g', amountMicro: 1_000_000n });
}

describe('services.stop()', () => {
  it('writes the queued spend rows before it closes the database it owns', async () => {
    const { services, events, tenantId } = await servicesWith({ owns: { store: true, database: true } });
    await services.start();
    await fund(services, tenantId);
    await settle(services, tenantId);
    await settle(services, tenantId);
    await services.stop();
    expect(events).toEqual(['database closed with 2 spend rows']);
  });

  it('closes the entry’s own connections, then the store, then the database, once', async () => {
    const order: string[] = [];
    const store = memoryStore({ log: createLogger({ level: 'silent' }) });
    const { services, events } = await servicesWith(
      {
        owns: {
          connections: [() => order.push('connection 1'), async () => order.push('connection 2')],
          store: true,
          database: true,
        },
      },
      {
        ...store,
        close: async () => {
          order.push('store');
        },
      },
    );
    await services.start();
    await Promise.all([services.stop(), services.stop()]);
    await services.stop();
    expect(order).toEqual(['connection 1', 'connection 2', 'store']);
    expect(events).toHaveLength(1);
  });

  it('closes the database even when the store cannot be closed', async () => {
    const store = memoryStore({ log: createLogger({ level: 'silent' }) });
    const { services, events, logs } = await servicesWith(
      { owns: { store: true, database: true } },
      {
        ...store,
        close: async () => {
          throw new Error('connection reset');
        },
      },
    );
    await services.start();
    await services.stop();
    expect(events).toEqual(['database closed with 0 spend rows']);
    expect(logs.some((record) => record.msg === 'store did not close cleanly')).toBe(true);
  });

  it('closes the store and the database even when one of its own connections fails to close', async () => {
    const { services, events, logs } = await servicesWith({
      owns: {
        connections: [
          async () => {
            throw new Error('socket already gone');
          },
        ],
        database: true,
      },
    });
    await services.start();
    await services.stop();
    expect(events).toEqual(['database closed with 0 spend rows']);
    expect(logs.some((record) => record.msg === 'a connection did not close cleanly')).toBe(true);
  });

  it('closes nothing it was not handed (a harness or a Workers request keeps its database)', async () => {
    const { services, events, tenantId } = await servicesWith({});
    await services.start();
    await fund(services, tenantId);
    await settle(services, tenantId);
    await services.stop();
    expect(events).toEqual([]);
    // The row held was still written: stop() always writes what is held.
    expect(await services.db.select().from(spend).where(eq(spend.tenantId, tenantId))).toHaveLength(1);
  });
});

describe('services.start()', () => {
  it('loads the signing keys (the first start creates one)', async () => {
    const { services } = await servicesWith({});
    expect(services.signing.jwks().jwks.keys).toHaveLength(0);
    await services.start();
    expect(services.signing.jwks().jwks.keys.length).toBeGreaterThanOrEqual(1);
    await services.stop();
  });
});

describe('the harness swaps the upstream and the pre-auth limiter in one line', () => {
  it('a given upstream is the one the gateway reports, started and stopped with it', async () => {
    const calls: string[] = [];
    const upstream: Upstream = {
      name: 'stand-in',
      open: async () => {
        throw new Error('not called here');
      },
      status: () => ({ name: 'stand-in', contract: { status: 'not_applicable' }, breaker: 'closed' }),
      start: () => void calls.push('start'),
      stop: () => void calls.push('stop'),
    };
    const harness = await createHarness({ upstream });
    try {
      expect(calls).toEqual(['start']);
      const ready = (await (await harness.request('/ready')).json()) as { checks: { upstream: unknown } };
      expect(ready.checks.upstream).toMatchObject({ engine: 'stand-in' });
    } finally {
      await harness.close();
    }
    expect(calls).toEqual(['start', 'stop']);
  });

  it('a given pre-auth limiter decides for the JWKS route', async () => {
    const routes: string[] = [];
    const harness = await createHarness({
      preAuth: {
        limitPerMinute: 1,
        check: async (_bucket, route) => {
          routes.push(route);
          return {
            allowed: false,
            limit: 1,
            remaining: 0,
            resetAtMs: Date.now() + 1_000,
            source: 'fallback',
          };
        },
      },
    });
    try {
      expect((await harness.request('/.well-known/jwks.json')).status).toBe(429);
      expect(routes).toEqual(['jwks']);
    } finally {
      await harness.close();
    }
  });
});
