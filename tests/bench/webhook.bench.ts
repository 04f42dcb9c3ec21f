/**
 * npm run bench:webhook — POST /api/crypto/webhook (NOWPayments IPNs) served by the real app over
 * loopback HTTP, on this machine's PostgreSQL (a scratch database, dropped at the end) and a
 * redis-server of its own. Prints figures; asserts nothing.
 *
 * 1. Processed: one signed `finished` IPN per waiting payment (distinct payments), BENCH_CONCURRENCY
 *    in flight over keep-alive connections: IPNs/s, p50/p99, and whether each answered `processed`
 *    and minted exactly once (journal entries of kind `payment`).
 * 2. Duplicates: the same signed IPNs sent again: all `duplicate`, p50/p99 of the answer.
 * 3. Forged flood: IPNs for distinct payments (ours, then made-up ones) signed with a wrong
 *    secret: all 401, requests/s, and the database work they caused, counted two ways — statements
 *    the app's client sent (a drizzle logger on the app's own postgres.js pool) and transactions
 *    PostgreSQL counted for the scratch database (pg_stat_database), which must both be 0.
 *
 * The per-IP pre-auth limit and the per-payment IPN throttle are lifted (a limit of 10^9, still
 * checked over Redis on every request as in production): all load comes from one address.
 *
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres): the server to measure.
 * BENCH_PAYMENTS (2000), BENCH_DUPLICATES (2000), BENCH_FORGED (5000), BENCH_CONCURRENCY (16),
 * BENCH_TENANTS (100).
 */
import { randomBytes } from 'node:crypto';
import { and, count, countDistinct, eq, isNotNull } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/postgres-js';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import * as schema from '../../db/schema/index.js';
import { type CryptoPaymentRow, cryptoPayments, journalEntries } from '../../db/schema/index.js';
import { createApp } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';
import { newId } from '../../src/ids.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { redisWindows } from '../../src/limits/ioredis-ratelimit-adapter.js';
import { createPaymentThrottle, createPreAuthLimiter } from '../../src/limits/preauth.js';
import { createLogger } from '../../src/observability/logger.js';
import { assembleServices } from '../../src/services.js';
import { localSigner } from '../../src/signing/signer.js';
import { redisStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createTestDatabase } from '../support/database.js';
import { insertPayment, ipnBody, signBody } from '../support/payments.js';
import { startRedisServer } from '../support/redis-server.js';
import { serve } from '../support/serve.js';
import { keepAliveAgent, type Shot, sendForText, shot } from './gateway/load.js';
import { cpuMs, cpuMsByName, machineBusyMs } from './gateway/proc.js';
import { positive } from './settings.js';

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(DATABASE_URL).hostname)) {
  throw new Error(`bench:webhook only runs against a loopback PostgreSQL`);
}
const PAYMENTS = Math.round(positive('BENCH_PAYMENTS', 2_000));
const DUPLICATES = Math.round(positive('BENCH_DUPLICATES', 2_000));
const FORGED = Math.round(positive('BENCH_FORGED', 5_000));
const CONCURRENCY = Math.round(positive('BENCH_CONCURRENCY', 16));
const TENANTS = Math.round(positive('BENCH_TENANTS', 100));
// Payments processed before the timed phase (first connections, prepared statements, JIT).
const WARMUP = CONCURRENCY * 4;
// 10^9 per window: never reached here, so neither limiter denies, yet both still run their script.
const LIFTED = 1_000_000_000;
// A backend defers its statistics while busy and flushes them after at most 10 s idle
// (PGSTAT_IDLE_INTERVAL, PostgreSQL 15+): pg_stat_database is read after that much quiet.
const STATS_SETTLE_MS = 11_000;
const WEBHOOK = '/api/crypto/webhook';

const log = createLogger({ level: 'silent' });
const database = await createTestDatabase(DATABASE_URL);
const scratchUrl = database.url as string;
const scratchName = new URL(scratchUrl).pathname.slice(1);
const redis = await startRedisServer();

// The app's pool, built as db/postgres.ts openPostgres builds it (10 connections), plus a drizzle
// logger that counts every statement the app sends (BEGIN/COMMIT of a transaction are not logged;
// pg_stat_database counts those). The scratch database's own handle only migrates it and drops it.
let statements = 0;
const appClient = postgres(scratchUrl, { max: 10, connect_timeout: 5, onnotice: () => {} });
const appDb = drizzle(appClient, {
  schema,
  logger: {
    logQuery: () => {
      statements += 1;
    },
  },
});

const secret = randomBytes(24).toString('base64url');
const parsed = parseConfig({ NOWPAYMENTS_IPN_SECRET: secret });
if (!parsed.ok) throw new Error(parsed.message);
// Its own connection, as the Node entry gives the limiters (src/entry/node.ts).
const limiterRedis = new Redis(redis.url);
limiterRedis.on('error', () => {});
const services = assembleServices({
  config: parsed.config,
  database: { db: appDb, engine: 'postgres', close: () => appClient.end({ timeout: 5 }) },
  store: redisStore({ url: redis.url, log }),
  signer: await localSigner(),
  peppers: parsePeppers(`1:${randomBytes(32).toString('base64url')}`) as Peppers,
  preAuth: createPreAuthLimiter({ log, shared: redisWindows(limiterRedis), limitPerMinute: LIFTED }),
  paymentThrottle: createPaymentThrottle({ log, shared: redisWindows(limiterRedis), limitPerHour: LIFTED }),
  log,
  lifecycle: { owns: { store: true, database: true, connections: [() => limiterRedis.disconnect()] } },
});
await services.start();
const server = await serve(createApp(services));

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

interface Phase {
  requests: number;
  seconds: number;
  latencies: number[];
  answers: Map<string, number>;
  statements: number;
  /**
   * CPU ms per request: this process (the app and the load generator), every postgres process on
   * the machine, the bench's redis-server, and the whole machine.
   */
  cpu: { app: number; postgres: number; redis: number; machine: number };
}

const cpuNow = () => {
  const own = process.cpuUsage();
  return {
    app: (own.user + own.system) / 1000,
    postgres: cpuMsByName('postgres'),
    redis: cpuMs(redis.process.pid as number),
    machine: machineBusyMs(),
  };
};

/** Sends every shot, `CONCURRENCY` in flight on keep-alive sockets; a 200 tallied by its `status`, else by its code. */
async function run(shots: Shot[]): Promise<Phase> {
  const agent = keepAliveAgent(CONCURRENCY);
  const latencies: number[] = [];
  const answers = new Map<string, number>();
  const statementsBefore = statements;
  let next = 0;
  const cpuBefore = cpuNow();
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < shots.length) {
        const target = shots[next++] as Shot;
        const t0 = performance.now();
        const { status, text } = await sendForText(agent, target);
        latencies.push(performance.now() - t0);
        let outcome = '';
        try {
          outcome = String((JSON.parse(text) as { status?: unknown }).status ?? '');
        } catch {}
        const key = status === 200 ? outcome : String(status);
        answers.set(key, (answers.get(key) ?? 0) + 1);
      }
    }),
  );
  const seconds = (performance.now() - startedAt) / 1000;
  const cpuAfter = cpuNow();
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return {
    requests: shots.length,
    seconds,
    latencies,
    answers,
    statements: statements - statementsBefore,
    cpu: {
      app: (cpuAfter.app - cpuBefore.app) / shots.length,
      postgres: (cpuAfter.postgres - cpuBefore.postgres) / shots.length,
      redis: (cpuAfter.redis - cpuBefore.redis) / shots.length,
      machine: (cpuAfter.machine - cpuBefore.machine) / shots.length,
    },
  };
}

const signed = (body: Record<string, unknown>, key: string) =>
  shot(server.url, WEBHOOK, body, { 'x-nowpayments-sig': signBody(key, body) });

/** Transactions PostgreSQL counted for the scratch database, read over a connection to another one. */
const stats = postgres(DATABASE_URL, { max: 1, onnotice: () => {}, fetch_types: false });
const transactions = async () => {
  const [row] = await stats<{ n: string }[]>`
    select (xact_commit + xact_rollback)::text as n from pg_stat_database where datname = ${scratchName}`;
  return Number(row?.n ?? Number.NaN);
};

console.log(
  `bench:webhook — PostgreSQL ${new URL(DATABASE_URL).host} (scratch ${scratchName}), redis-server on :${redis.port}, app on ${server.url}`,
);
console.log(
  `limits lifted: per-IP pre-auth and per-payment IPN throttle at ${LIFTED.toExponential(0)} per window (still checked over Redis on every request)`,
);

// Tenants and waiting payments, up front.
const tenantIds: string[] = [];
for (let i = 0; i < TENANTS; i += 1) {
  tenantIds.push((await createTenant(services, { name: `bench ${i}`, tier: 4 })).id);
}
const payments: CryptoPaymentRow[] = [];
for (let i = 0; i < WARMUP + PAYMENTS; i += 1) {
  payments.push(await insertPayment(services, { tenantId: tenantIds[i % TENANTS] as string }));
}
const finished = payments.map((payment) => signed(ipnBody(payment, 'finished', Date.now()), secret));
console.log(
  `${TENANTS} tenants, ${PAYMENTS} waiting payments (+${WARMUP} warm-up), ${CONCURRENCY} in flight over keep-alive HTTP`,
);

// 1. Processed.
const warm = await run(finished.slice(0, WARMUP));
const processed = await run(finished.slice(WARMUP));

// 2. Duplicates: the processed IPNs again, byte for byte.
const duplicates = await run(
  Array.from({ length: DUPLICATES }, (_, i) => finished[WARMUP + (i % PAYMENTS)] as Shot),
);

// 3. Forged flood: distinct payments — ours first (a newer `finished`), then made-up ones — each
// signed with a secret that is not ours.
const wrongSecret = randomBytes(24).toString('base64url');
const forgedShots = Array.from({ length: FORGED }, (_, i) => {
  const payment = payments[i] ?? { id: newId('pay'), providerInvoiceId: String(5_000_000_000 + i) };
  return signed(ipnBody(payment, 'finished', Date.now() + 1_000), wrongSecret);
});
// No autovacuum work pending (the inserts above would wake it), then the statistics settle.
const maintenance = postgres(scratchUrl, { max: 1, onnotice: () => {}, fetch_types: false });
await maintenance.unsafe('vacuum analyze');
await maintenance.end();
await new Promise((resolve) => setTimeout(resolve, STATS_SETTLE_MS));
const transactionsBefore = await transactions();
const forged = await run(forgedShots);
await new Promise((resolve) => setTimeout(resolve, STATS_SETTLE_MS));
const forgedTransactions = (await transactions()) - transactionsBefore;

// Checks: one `payment` entry per payment, one mint each, each credited in the engine.
const [book] = await services.db
  .select({ entries: count(), payments: countDistinct(journalEntries.reference) })
  .from(journalEntries)
  .where(eq(journalEntries.kind, 'payment'));
const [minted] = await services.db
  .select({ n: count() })
  .from(cryptoPayments)
  .where(and(isNotNull(cryptoPayments.mintedAt), isNotNull(cryptoPayments.engineCreditedAt)));

const answers = (phase: Phase) => [...phase.answers].map(([key, n]) => `${key}×${n}`).join(' ');
console.log('\n                                                                        CPU ms per request');
console.log(
  'phase                    requests  seconds   req/s  p50 ms  p99 ms  stmts/req    app    pg  redis  machine  answers',
);
const row = (name: string, phase: Phase) => {
  const { app, postgres, redis, machine } = phase.cpu;
  console.log(
    [
      name.padEnd(24),
      String(phase.requests).padStart(8),
      phase.seconds.toFixed(2).padStart(8),
      String(Math.round(phase.requests / phase.seconds)).padStart(7),
      quantile(phase.latencies, 0.5).toFixed(2).padStart(7),
      quantile(phase.latencies, 0.99).toFixed(2).padStart(7),
      (phase.statements / phase.requests).toFixed(2).padStart(10),
      app.toFixed(2).padStart(6),
      postgres.toFixed(2).padStart(5),
      redis.toFixed(2).padStart(6),
      machine.toFixed(2).padStart(8),
      ` ${answers(phase)}`,
    ].join(' '),
  );
};
row('warm-up (not counted)', warm);
row('processed (distinct)', processed);
row('duplicate', duplicates);
row('forged signature', forged);

console.log(
  "(stmts/req: statements the app's client sent, BEGIN and COMMIT not counted; CPU: app = this process, the app and the load generator; pg = every postgres process on the machine; redis = the bench's redis-server; machine = all cores busy)",
);

const total = WARMUP + PAYMENTS;
const all = (phase: Phase, key: string) => (phase.answers.get(key) === phase.requests ? 'yes' : 'NO');
console.log(`\nevery distinct payment answered \`processed\`: ${all(processed, 'processed')}`);
console.log(`every copy answered \`duplicate\`: ${all(duplicates, 'duplicate')}`);
console.log(`every forged IPN answered 401: ${all(forged, '401')}`);
console.log(
  `minted once: ${book?.entries} journal entries of kind 'payment' for ${book?.payments} distinct payments, ${minted?.n} payments minted and credited in the engine, of ${total} sent \`finished\` (warm-up included)`,
);
console.log(
  `database work during the forged flood: ${forged.statements} statements sent by the app's client (a drizzle logger counting every statement on its pool), ${forgedTransactions} transactions counted by PostgreSQL for the scratch database (pg_stat_database xact_commit + xact_rollback, read from another database after ${STATS_SETTLE_MS / 1000} s of quiet either side, so the bench's reads are not among them)`,
);

await stats.end();
await server.close();
await services.stop();
await redis.stop();
await database.drop();
