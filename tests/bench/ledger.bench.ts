/**
 * npm run bench:ledger — the book of record under the gateway's load, on this machine's PostgreSQL
 * (a scratch database, dropped at the end) and a redis-server of its own. Prints figures; asserts
 * nothing.
 *
 * 1. Ledger writes sustained by the spend path: settlements made by budget_finalize (admit +
 *    finalize pairs, untimed) written to PostgreSQL as the gateway writes them — spend rows and
 *    their `spend` entries — both ways it does: a gateway's own rows (writeSettledSpend, batches of
 *    64) and the outbox drain (drainOutbox: read, write, ack). Entries/s against the gateway's own
 *    saturation rate (BENCH_GATEWAY_RPS, default the best bench:gateway figure in
 *    docs/performance.md): the book must sustain ≥ 3 × it.
 * 2. Time to hydrate one tenant (the book read + the hydrate script, the store's balance deleted
 *    before each try), p50/p99, for a tenant with BENCH_HISTORY grants and charges.
 * 3. A reaper cycle over 10,000 open reservations past their deadline across 1,000 tenants.
 *
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres): the server to measure.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { openPostgres } from '../../db/postgres.js';
import { bypassRowLevelSecurity } from '../../db/scope.js';
import { grantCredits } from '../../src/billing/credits.js';
import { parseConfig } from '../../src/config.js';
import { newId } from '../../src/ids.js';
import { reaperJob } from '../../src/jobs/reaper.js';
import { jobsState, runDueJobs } from '../../src/jobs/runner.js';
import { type Peppers, parsePeppers } from '../../src/keys/peppers.js';
import { hydrateFromBook } from '../../src/ledger/hydrate.js';
import { drainOutbox, type SettledSpend, writeSettledSpend } from '../../src/ledger/outbox.js';
import { createLogger } from '../../src/observability/logger.js';
import { assembleServices } from '../../src/services.js';
import { localSigner } from '../../src/signing/signer.js';
import { redisStore } from '../../src/store/index.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createTestDatabase } from '../support/database.js';
import { startRedisServer } from '../support/redis-server.js';
import { NO_LIMITS, positive } from './settings.js';

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(DATABASE_URL).hostname)) {
  throw new Error(`bench:ledger only runs against a loopback PostgreSQL`);
}
const SETTLEMENTS = Math.round(positive('BENCH_SETTLEMENTS', 20_000));
const HISTORY = Math.round(positive('BENCH_HISTORY', 2_000));
const HYDRATIONS = Math.round(positive('BENCH_HYDRATIONS', 300));
const GATEWAY_RPS = positive('BENCH_GATEWAY_RPS', 2_273);
const TENANTS = 64;
const REAP_TENANTS = 1_000;
const REAP_RESERVATIONS = 10_000;

const log = createLogger({ level: 'silent' });
const database = await createTestDatabase(DATABASE_URL);
const redis = await startRedisServer();
const store = redisStore({ url: redis.url, log });
const parsed = parseConfig({});
if (!parsed.ok) throw new Error(parsed.message);
const services = assembleServices({
  config: parsed.config,
  database: database.handle,
  store,
  signer: await localSigner(),
  peppers: parsePeppers(`1:${randomBytes(32).toString('base64url')}`) as Peppers,
  log,
  lifecycle: { owns: { store: true } },
});
await services.start();

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

/** Admits and settles `count` requests round-robin over the tenants; returns the settlements. */
async function settle(tenantIds: string[], count: number, ttlMs = 300_000, finalize = true) {
  const settled: { row: SettledSpend; outboxEntryId: string | null }[] = [];
  const lanes = 64;
  let next = 0;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < count) {
        const at = next++;
        const tenantId = tenantIds[at % tenantIds.length] as string;
        const reservationId = newId('res');
        const nowMs = Date.now();
        const admitted = await store.admit({
          tenantId,
          keyId: 'key_bench',
          pool: 'standard',
          reservationId,
          costMicro: 1_000n,
          tokenEstimate: 10,
          nowMs,
          ttlMs,
          limits: NO_LIMITS,
        });
        if (admitted.status !== 'ADMITTED') throw new Error(`admit: ${admitted.status}`);
        if (!finalize) continue;
        const spend = { keyId: 'key_bench', promptTokens: 3, completionTokens: 7, free: false };
        const result = await store.finalize({ tenantId, reservationId, actualCostMicro: 900n, nowMs, spend });
        if (result.status !== 'FINALIZED') throw new Error(`finalize: ${result.status}`);
        settled.push({
          outboxEntryId: result.outboxEntryId,
          row: {
            reservationId,
            tenantId,
            keyId: spend.keyId,
            pool: 'standard',
            promptTokens: 3,
            completionTokens: 7,
            costMicro: 900n,
            chargedMicro: 900n,
            free: false,
            settledAt: new Date(nowMs),
          },
        });
      }
    }),
  );
  return settled;
}

async function tenantsWithCredits(count: number, amountMicro: bigint): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const tenant = await createTenant(services, { name: `bench ${i}`, tier: 4 });
    await grantCredits(services, { tenantId: tenant.id, amountMicro, reason: 'bench', grantedBy: 'bench' });
    ids.push(tenant.id);
  }
  return ids;
}

console.log(`bench:ledger — PostgreSQL ${new URL(DATABASE_URL).host}, redis-server on :${redis.port}`);

// 1. Ledger writes.
const tenantIds = await tenantsWithCredits(TENANTS, 10n ** 12n);
const direct = await settle(tenantIds, SETTLEMENTS);
// The gateway's own path: each settled row handed to the SpendRecorder with its outbox entry, which
// writes 64 rows a statement and acknowledges their entries.
let startedAt = performance.now();
for (const { row, outboxEntryId } of direct) services.spend.settled(row, outboxEntryId);
await services.spend.flush();
const directSeconds = (performance.now() - startedAt) / 1000;
// What a dead gateway left: the same number of settlements, written by the outbox drain.
await settle(tenantIds, SETTLEMENTS);
startedAt = performance.now();
const drained = await drainOutbox(services.db, store, tenantIds);
const drainSeconds = (performance.now() - startedAt) / 1000;
const directRate = Math.round(direct.length / directSeconds);
const drainRate = Math.round(drained.entries / drainSeconds);
console.log('\n1. ledger writes by the spend path (one spend row + one entry + two postings each)');
console.log('path                          entries   seconds   entries/s   × gateway saturation');
const line = (name: string, n: number, s: number, rate: number) =>
  console.log(
    `${name.padEnd(28)} ${String(n).padStart(8)} ${s.toFixed(2).padStart(9)} ${String(rate).padStart(11)} ${(rate / GATEWAY_RPS).toFixed(1).padStart(12)} ×`,
  );
line('settling gateway (held rows)', direct.length, directSeconds, directRate);
line('outbox drain', drained.entries, drainSeconds, drainRate);
console.log(`(gateway saturation taken as ${GATEWAY_RPS} req/s: BENCH_GATEWAY_RPS)`);

// 1b. Row-level security's cost on the spend writer (db/scope.ts): the same batches of 64 rows
// written through the scopes (one transaction per batch, the tenant switched per tenant in it)
// and with the scopes bypassed (SPICEGATE_BENCH_RLS_BYPASS: the same transaction, no role), in
// alternating rounds, for batches of 64 tenants and of 1.
const bypassHandle = await openPostgres(database.url ?? DATABASE_URL, { maxConnections: 4 });
bypassRowLevelSecurity(bypassHandle.db);
const syntheticRows = (tenants: string[], count: number): SettledSpend[] =>
  Array.from({ length: count }, (_, i) => ({
    reservationId: newId('res'),
    tenantId: tenants[i % tenants.length] as string,
    keyId: 'key_bench',
    pool: 'standard',
    promptTokens: 3,
    completionTokens: 7,
    costMicro: 900n,
    chargedMicro: 900n,
    free: false,
    settledAt: new Date(),
  }));
const RLS_ROUNDS = 6;
const RLS_BATCHES = Math.max(1, Math.round(SETTLEMENTS / 64 / RLS_ROUNDS / 2));
const rlsRates: Record<string, number[]> = {};
for (let round = 0; round < RLS_ROUNDS; round += 1) {
  for (const [spread, tenants] of [
    ['64 tenants a batch', tenantIds],
    ['1 tenant a batch', tenantIds.slice(0, 1)],
  ] as const) {
    for (const [mode, db] of (round % 2 === 0
      ? [
          ['scoped', services.db],
          ['bypassed', bypassHandle.db],
        ]
      : [
          ['bypassed', bypassHandle.db],
          ['scoped', services.db],
        ]) as [string, typeof services.db][]) {
      const batches = Array.from({ length: RLS_BATCHES }, () => syntheticRows(tenants, 64));
      let nextBatch = 0;
      const began = performance.now();
      // 4 in flight, as the spend writer.
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          for (let batch = batches[nextBatch++]; batch !== undefined; batch = batches[nextBatch++])
            await writeSettledSpend(db, batch);
        }),
      );
      const rate = (RLS_BATCHES * 64) / ((performance.now() - began) / 1000);
      const key = `${spread}|${mode}`;
      rlsRates[key] = [...(rlsRates[key] ?? []), rate];
    }
  }
}
await bypassHandle.close();
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
console.log(
  `\n1b. row-level security on the spend writer: ${RLS_ROUNDS} alternating rounds of ${RLS_BATCHES} batches of 64 rows each way (median rows/s)`,
);
for (const spread of ['64 tenants a batch', '1 tenant a batch']) {
  const scoped = median(rlsRates[`${spread}|scoped`] ?? []);
  const bypassed = median(rlsRates[`${spread}|bypassed`] ?? []);
  console.log(
    `${spread.padEnd(20)} scoped ${Math.round(scoped).toString().padStart(6)}  bypassed ${Math.round(bypassed).toString().padStart(6)}  scoped/bypassed ${(scoped / bypassed).toFixed(2)}`,
  );
}

// 2. Hydration.
const [historied] = await tenantsWithCredits(1, 10n ** 12n);
const tenantId = historied as string;
for (let i = 1; i < HISTORY / 2; i += 1) {
  await grantCredits(services, { tenantId, amountMicro: 1_000n, reason: 'history', grantedBy: 'bench' });
}
const history = await settle([tenantId], Math.ceil(HISTORY / 2));
for (const { row, outboxEntryId } of history) services.spend.settled(row, outboxEntryId);
await services.spend.flush();
const raw = new Redis(redis.url);
const times: number[] = [];
for (let i = 0; i < HYDRATIONS; i += 1) {
  await raw.del(`{t:${tenantId}}:bal`);
  const t0 = performance.now();
  const result = await hydrateFromBook(services, tenantId);
  times.push(performance.now() - t0);
  if (result.status !== 'HYDRATED') throw new Error(`hydrate: ${result.status}`);
}
times.sort((a, b) => a - b);
console.log(
  `\n2. hydrating one tenant (${HISTORY / 2} grants, ${history.length} charges), ${HYDRATIONS} times`,
);
console.log(
  `p50 ${quantile(times, 0.5).toFixed(2)} ms   p99 ${quantile(times, 0.99).toFixed(2)} ms   max ${(times.at(-1) ?? 0).toFixed(2)} ms`,
);

// 3. Reaper cycle.
const reapTenants = await tenantsWithCredits(REAP_TENANTS, 10n ** 12n);
for (const id of reapTenants) await store.markTenant({ tenantId: id, nowMs: Date.now() });
// The shortest lifetime admit accepts (1 s), then past it: every reservation is due.
await settle(reapTenants, REAP_RESERVATIONS, 1_000, false);
await new Promise((resolve) => setTimeout(resolve, 1_100));
const releasedBefore = (await services.metrics.reaperReleased.get()).values[0]?.value ?? 0;
const t0 = performance.now();
await runDueJobs(services, [reaperJob({ intervalMs: 30_000 })], Date.now(), jobsState('bench'));
const cycleMs = performance.now() - t0;
const released = ((await services.metrics.reaperReleased.get()).values[0]?.value ?? 0) - releasedBefore;
let stillReserved = 0n;
for (const id of reapTenants) stillReserved += (await store.snapshot(id)).reservedMicro;
console.log(
  `\n3. one reaper cycle (its lease, a fenced write per tenant): ${REAP_TENANTS} tenants, ${released} of ${REAP_RESERVATIONS} reservations released in ${cycleMs.toFixed(0)} ms; still reserved: ${stillReserved} µ`,
);

raw.disconnect();
await services.stop();
await redis.stop();
await database.drop();
