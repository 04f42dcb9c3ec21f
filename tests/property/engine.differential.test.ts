import fc from 'fast-check';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import type { AdmitLimits, CancelResult, FinalizeResult } from '../../src/store/contracts.js';
import { memoryRunner } from '../../src/store/memory/index.js';
import type { Reply, ScriptRunner } from '../../src/store/port.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore, type Store, tenantKey } from '../../src/store/typed-store.js';
import { filePrefix, NO_LIMITS, startBalance } from '../support/engines.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';

/**
 * Differential property: random sequences of admit (free ones, cost 0, included) / finalize (in
 * recovery mode too, and of ids never admitted, as after a loss of the store's data) /
 * cancel / reap / credit / debit (a refund's, which may take available below 0) / budget threshold
 * checks / clock advances / hydrate / outbox drains (read, acknowledge, acknowledge again; and
 * acknowledgements a finalize carries) / rebase
 * (the conservation repair, against the figures just read or stale ones) / the tenant index (mark,
 * page, prune) / flushing the store (every key of the run gone, as after FLUSHALL), run on the Lua
 * scripts (real Redis) and on the memory engine, give identical replies (outbox entry ids aside:
 * each engine makes its own from its clock) and identical snapshots after every step; committed +
 * reserved never exceeds credited except by what late finalizes (after a reap) and recovered
 * settlements (of ids the store no longer knows) reported charging and what debits took; and each
 * tenant's balance `outbox` field is the sum of the charges waiting in its outbox.
 *
 * Seeded: PROPERTY_SEED reproduces a run (fast-check prints the seed and path on failure);
 * PROPERTY_RUNS raises the number of sequences (default 200, each of 50–70 operations).
 */
const SEED = Number(process.env.PROPERTY_SEED ?? Math.floor(Math.random() * 2 ** 31));
const RUNS = Number(process.env.PROPERTY_RUNS ?? 200);
const TENANTS = 3;
// Ten minutes before a month ends: sequences cross windows, days, TTLs and the month boundary.
const START = Date.UTC(2026, 10, 30, 23, 50, 0);

const LIMIT_VARIANTS: AdmitLimits[] = [
  NO_LIMITS,
  {
    tenantRpm: 6,
    userRpm: 3,
    channelRpm: 4,
    keyRpm: 5,
    burstCapacity: 3,
    burstRefillPerMinute: 30,
    keyTpd: 400,
    tenantMonthlyCapMicro: 6_000n,
    keyMonthlyCapMicro: 4_000n,
  },
  { ...NO_LIMITS, keyRpm: 2, tenantMonthlyCapMicro: 2_500n },
  { ...NO_LIMITS, tenantRpm: 3 },
  { ...NO_LIMITS, userRpm: 1, channelRpm: 2 },
  { ...NO_LIMITS, burstCapacity: 2, burstRefillPerMinute: 10, keyMonthlyCapMicro: 1_500n },
];

type Op =
  | {
      kind: 'admit';
      tenant: number;
      key: number;
      user: number;
      cost: number;
      tokens: number;
      idem: number;
      ttl: number;
      limits: number;
    }
  | {
      kind: 'finalize';
      ref: number;
      actual: number;
      tokens: number;
      prompt: number;
      free: boolean;
      /** Recovery mode (the request path's): an unknown id with a charge is billed all the same. */
      recover: boolean;
      /** A reservation id never admitted (as one lost with the store's data), on tenant ref % TENANTS. */
      lost: boolean;
      /** The tenant's oldest outbox entries this finalize acknowledges (budget_finalize v5), 0..3. */
      ack: number;
    }
  | { kind: 'cancel'; ref: number }
  | { kind: 'reap'; tenant: number }
  | { kind: 'credit'; tenant: number; grant: number; amount: number }
  /** A refund's debit: ids refund-0, refund-1, which hydrate and rebase may list as applied too. */
  | { kind: 'debit'; tenant: number; debit: number; amount: number }
  | { kind: 'thresholds'; ref: number; tenantCap: number; keyCap: number }
  | { kind: 'advance'; ms: number }
  | {
      kind: 'hydrate';
      tenant: number;
      credited: number;
      committedShare: number;
      grants: { grant: number; amount: number }[];
      /** -1: no month figures; else the tenant's month, and each of keys k0, k1. */
      month: number;
      keyMonths: number[];
    }
  | { kind: 'drain'; tenant: number; count: number; ack: number; again: boolean }
  | {
      kind: 'rebase';
      tenant: number;
      /** The book's credited beyond what the balance holds reserved. */
      credited: number;
      spentShare: number;
      grants: { grant: number; amount: number }[];
      /** Expect a committed 1 µ off what was read: the compare-and-set must refuse. */
      stale: boolean;
    }
  | { kind: 'flush' }
  /** The tenant index: times `back` ms before now (a mark from a slower clock, an older cutoff). */
  | { kind: 'mark'; tenant: number; back: number }
  | { kind: 'page'; after: number; limit: number }
  | { kind: 'prune'; tenant: number; back: number };

const tenant = fc.integer({ min: 0, max: TENANTS - 1 });
/** An applied id hydrate and rebase list: grants g0..g3 (as credit names them), then refund-0, refund-1 (debit's). */
const appliedId = (n: number) => (n < 4 ? `g${n}` : `refund-${n - 4}`);
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('admit' as const),
      tenant,
      key: fc.integer({ min: 0, max: 1 }),
      user: fc.integer({ min: -1, max: 2 }),
      // One admission in ~9 is free (a sandbox key's zero reservation).
      cost: fc.oneof(
        { weight: 1, arbitrary: fc.constant(0) },
        { weight: 8, arbitrary: fc.integer({ min: 1, max: 800 }) },
      ),
      tokens: fc.integer({ min: 0, max: 150 }),
      idem: fc.integer({ min: -1, max: 4 }),
      ttl: fc.constantFrom(1_000, 30_000, 300_000),
      limits: fc.integer({ min: 0, max: LIMIT_VARIANTS.length - 1 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('finalize' as const),
      ref: fc.nat(),
      actual: fc.integer({ min: 0, max: 2_000 }),
      tokens: fc.integer({ min: 0, max: 200 }),
      prompt: fc.integer({ min: 0, max: 50 }),
      // Now and then a free settlement: refused for a paid reservation, recorded at cost for a free one.
      free: fc.oneof(
        { weight: 6, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
      recover: fc.boolean(),
      lost: fc.oneof(
        { weight: 5, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
      ack: fc.integer({ min: 0, max: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cancel' as const), ref: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reap' as const), tenant }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('credit' as const),
      tenant,
      grant: fc.integer({ min: 0, max: 3 }),
      amount: fc.integer({ min: 1, max: 5_000 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('debit' as const),
      tenant,
      debit: fc.integer({ min: 0, max: 1 }),
      // Mostly one amount (so a debit is replayed as it was), now and then another, up to past the balance.
      amount: fc.oneof(
        { weight: 3, arbitrary: fc.constant(700) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }) },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('thresholds' as const),
      ref: fc.nat(),
      // Caps small enough that sequences reach 80 % and 100 % of them often (-1: no cap).
      tenantCap: fc.constantFrom(-1, 0, 40, 300, 1_000, 2_500),
      keyCap: fc.constantFrom(-1, 0, 40, 300, 1_000),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('hydrate' as const),
      tenant,
      credited: fc.integer({ min: 0, max: 10_000 }),
      // committed = credited × share / 100: never past credited, as in the book.
      committedShare: fc.integer({ min: 0, max: 100 }),
      grants: fc.array(
        fc.record({ grant: fc.integer({ min: 0, max: 5 }), amount: fc.integer({ min: 1, max: 5_000 }) }),
        { maxLength: 2 },
      ),
      month: fc.integer({ min: -1, max: 3_000 }),
      keyMonths: fc.array(fc.integer({ min: 0, max: 2_000 }), { maxLength: 2 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('drain' as const),
      tenant,
      count: fc.integer({ min: 1, max: 4 }),
      ack: fc.nat(),
      again: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('rebase' as const),
      tenant,
      credited: fc.integer({ min: 0, max: 10_000 }),
      spentShare: fc.integer({ min: 0, max: 100 }),
      grants: fc.array(
        fc.record({ grant: fc.integer({ min: 0, max: 5 }), amount: fc.integer({ min: 1, max: 5_000 }) }),
        { maxLength: 2 },
      ),
      stale: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('mark' as const),
      tenant,
      back: fc.integer({ min: 0, max: 120_000 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('page' as const),
      after: fc.integer({ min: -1, max: TENANTS - 1 }),
      limit: fc.integer({ min: 1, max: TENANTS + 1 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('prune' as const),
      tenant,
      back: fc.integer({ min: 0, max: 120_000 }),
    }),
  },
  // Mostly small steps, so requests meet inside windows and buckets; now and then a long one past
  // TTLs, windows, days and the month's end.
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 3_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 400_000 }) }),
  },
);

/**
 * Records every reply, so raw replies (not only the decoded results) are compared; outbox entry
 * ids (every 10th value of outbox_read's, the 5th of a settlement's) are left out, as each engine
 * makes its own.
 */
function recording(runner: ScriptRunner): ScriptRunner & { replies: Reply[] } {
  const replies: Reply[] = [];
  return {
    engine: runner.engine,
    replies,
    ping: () => runner.ping(),
    close: () => runner.close(),
    run: async (script, keys, args) => {
      const reply = await runner.run(script, keys, args);
      const masked =
        script === 'outbox_read' && reply[0] === 'OUTBOX'
          ? reply.map((value, at) => (at % 10 === 1 ? '<id>' : value))
          : script === 'budget_finalize'
            ? reply.map((value, at) => (at === 4 && value !== '' ? '<id>' : value))
            : reply;
      replies.push(masked);
      return reply;
    },
  };
}

/** A settlement's answer with its outbox entry id masked (each engine makes its own). */
function withoutEntryId<T>(result: T): T {
  if (typeof result !== 'object' || result === null || !('outboxEntryId' in result)) return result;
  return { ...result, outboxEntryId: result.outboxEntryId === null ? null : '<id>' };
}

/** A tenant's outbox without its entry ids, and the balance's `outbox` field (0 when absent). */
async function outboxOf(store: Store, field: () => Promise<string | null>, tenantId: string) {
  const read = await store.outboxRead({ tenantId, count: 1000 });
  if (read.status !== 'OUTBOX') throw new Error(read.field);
  return {
    entries: read.entries.map(({ id: _, ...entry }) => entry),
    waitingMicro: read.entries.reduce((sum, entry) => sum + entry.chargedMicro, 0n),
    fieldMicro: BigInt((await field()) ?? '0'),
  };
}

describe('redis and memory engines', () => {
  const log = createLogger({ level: 'silent' });
  const keyPrefix = filePrefix();
  const redisUrl = inject('redisUrl');
  const redis = redisRunner({ url: redisUrl, log, keyPrefix });
  afterAll(async () => {
    await redis.close();
    await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
  });
  let run = 0;
  let thresholdsReached = 0;
  let outboxAcked = 0;
  let ackedByFinalize = 0;
  let recovered = 0;
  let debits = 0;

  it(`agree on every reply and snapshot (seed ${SEED}, ${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 50, maxLength: 70 }), async (ops) => {
        run += 1;
        const left = recording(redis);
        const memory = memoryRunner();
        const right = Object.assign(recording(memory), { kv: memory.kv });
        const stores: [Store, Store] = [createStore(left, { log }), createStore(right, { log })];
        const tenants = Array.from({ length: TENANTS }, (_, i) => `p${SEED}_${run}_${i}`);
        const lateCharged = tenants.map(() => 0n);
        // What debits took from credited under open reservations and settled charges.
        const debited = tenants.map(() => 0n);
        const reservations: { tenant: number; id: string }[] = [];
        let now = START;
        // The tenant index is one key for the whole file: each run starts without it, as memory does.
        await deleteKeysWithPrefix(redisUrl, `${keyPrefix}{i:tenants}`);
        for (const tenantId of tenants) {
          await Promise.all(stores.map((s) => startBalance(s, tenantId)));
          await Promise.all(stores.map((s) => s.credit({ tenantId, grantId: 'seed', amountMicro: 8_000n })));
        }

        for (const [step, o] of ops.entries()) {
          const both = async <T>(call: (store: Store, engine: number) => Promise<T>): Promise<T> => {
            const [a, b] = await Promise.all([call(stores[0], 0), call(stores[1], 1)]);
            expect(withoutEntryId(b), `step ${step} ${JSON.stringify(o)}`).toEqual(withoutEntryId(a));
            return a;
          };
          switch (o.kind) {
            case 'admit': {
              const id = `r${run}_${step}`;
              const result = await both((s) =>
                s.admit({
                  tenantId: tenants[o.tenant] as string,
                  keyId: `k${o.key}`,
                  ...(o.user >= 0 ? { userId: `u${o.user}`, channelId: `c${o.user % 2}` } : {}),
                  pool: 'standard',
                  ...(o.idem >= 0 ? { idempotencyKey: `i${o.idem}` } : {}),
                  reservationId: id,
                  costMicro: BigInt(o.cost),
                  tokenEstimate: o.tokens,
                  nowMs: now,
                  ttlMs: o.ttl,
                  limits: LIMIT_VARIANTS[o.limits] as AdmitLimits,
                }),
              );
              if (result.status === 'ADMITTED') reservations.push({ tenant: o.tenant, id });
              break;
            }
            case 'finalize':
            case 'cancel': {
              const target =
                o.kind === 'finalize' && o.lost
                  ? { tenant: o.ref % TENANTS, id: `lost${run}_${o.ref % 4}` }
                  : (reservations[o.ref % Math.max(1, reservations.length)] ?? { tenant: 0, id: 'res_none' });
              const tenantId = tenants[target.tenant] as string;
              // Each engine acknowledges its own entries (ids differ): the same ones by position.
              const acks = await Promise.all(
                stores.map(async (s) => {
                  if (o.kind !== 'finalize' || o.ack === 0) return [];
                  const read = await s.outboxRead({ tenantId, count: o.ack });
                  if (read.status !== 'OUTBOX') throw new Error(read.field);
                  return read.entries.map(({ id, reservationId }) => ({ id, reservationId }));
                }),
              );
              const result = await both<FinalizeResult | CancelResult>((s, engine) =>
                o.kind === 'cancel'
                  ? s.cancel({ tenantId, reservationId: target.id, nowMs: now })
                  : s.finalize({
                      tenantId,
                      reservationId: target.id,
                      actualCostMicro: BigInt(o.actual),
                      nowMs: now,
                      spend: {
                        keyId: 'key_row',
                        promptTokens: o.prompt,
                        completionTokens: o.tokens,
                        free: o.free,
                      },
                      ...(o.recover ? { recover: { pool: 'standard' } } : {}),
                      ...((acks[engine]?.length ?? 0) > 0 ? { ack: acks[engine] } : {}),
                    }),
              );
              if (o.kind === 'finalize' && result.status !== 'INVALID_INPUT' && result.status !== 'HYDRATE')
                ackedByFinalize += acks[0]?.length ?? 0;
              if (result.status === 'RECOVERED') recovered += 1;
              if (result.status === 'LATE_FINALIZE' || result.status === 'RECOVERED') {
                lateCharged[target.tenant] = (lateCharged[target.tenant] ?? 0n) + result.chargedMicro;
              }
              break;
            }
            case 'reap':
              await both((s) => s.reap({ tenantId: tenants[o.tenant] as string, nowMs: now }));
              break;
            case 'thresholds': {
              const target = reservations[o.ref % Math.max(1, reservations.length)] ?? {
                tenant: 0,
                id: 'res_none',
              };
              const cap = (value: number) => (value < 0 ? null : BigInt(value));
              const result = await both((s) =>
                s.budgetEvent({
                  tenantId: tenants[target.tenant] as string,
                  reservationId: target.id,
                  tenantMonthlyCapMicro: cap(o.tenantCap),
                  keyMonthlyCapMicro: cap(o.keyCap),
                }),
              );
              if (result.status === 'THRESHOLDS') thresholdsReached += result.reached.length;
              break;
            }
            case 'credit':
              await both((s) =>
                s.credit({
                  tenantId: tenants[o.tenant] as string,
                  grantId: `g${o.grant}`,
                  amountMicro: BigInt(o.amount),
                }),
              );
              break;
            case 'debit': {
              const result = await both((s) =>
                s.debit({
                  tenantId: tenants[o.tenant] as string,
                  debitId: `refund-${o.debit}`,
                  amountMicro: BigInt(o.amount),
                }),
              );
              if (result.status === 'DEBITED') {
                debits += 1;
                debited[o.tenant] = (debited[o.tenant] ?? 0n) + BigInt(o.amount);
              }
              break;
            }
            case 'advance':
              now += o.ms;
              break;
            case 'hydrate': {
              const credited = BigInt(o.credited);
              await both((s) =>
                s.hydrate({
                  tenantId: tenants[o.tenant] as string,
                  creditedMicro: credited,
                  committedMicro: (credited * BigInt(o.committedShare)) / 100n,
                  grants: o.grants.map((g) => ({
                    grantId: appliedId(g.grant),
                    amountMicro: BigInt(g.amount),
                  })),
                  ...(o.month < 0
                    ? {}
                    : {
                        month: {
                          nowMs: now,
                          tenantCommittedMicro: BigInt(o.month),
                          keys: o.keyMonths.map((committed, i) => ({
                            keyId: `k${i}`,
                            committedMicro: BigInt(committed),
                          })),
                        },
                      }),
                }),
              );
              break;
            }
            case 'drain': {
              // Each engine acknowledges its own entries: the same ones by position.
              const tenantId = tenants[o.tenant] as string;
              const reads = await Promise.all(
                stores.map(async (s) => {
                  const read = await s.outboxRead({ tenantId, count: o.count });
                  if (read.status !== 'OUTBOX') throw new Error(read.field);
                  return read.entries;
                }),
              );
              const ids = reads.map((entries) =>
                entries.map(({ id, reservationId }) => ({ id, reservationId })),
              );
              expect(
                reads[1]?.map(({ id: _, ...entry }) => entry),
                `step ${step} ${JSON.stringify(o)}`,
              ).toEqual(reads[0]?.map(({ id: _, ...entry }) => entry));
              const taken = o.ack % ((ids[0]?.length ?? 0) + 1);
              for (const _ of o.again ? [1, 2] : [1]) {
                const acks = await Promise.all(
                  stores.map((s, i) => s.outboxAck({ tenantId, entries: (ids[i] ?? []).slice(0, taken) })),
                );
                expect(acks[1], `step ${step} ${JSON.stringify(o)}`).toEqual(acks[0]);
                if (acks[0]?.status === 'ACKED') outboxAcked += acks[0].deleted;
              }
              break;
            }
            case 'rebase': {
              const tenantId = tenants[o.tenant] as string;
              const read = await both((s) => s.snapshot(tenantId));
              // Book figures that keep committed + reserved within credited, as a real book does.
              const base = BigInt(o.credited);
              await both((s) =>
                s.rebase({
                  tenantId,
                  expected: {
                    creditedMicro: read.creditedMicro,
                    committedMicro: read.committedMicro + (o.stale ? 1n : 0n),
                    outboxMicro: read.outboxMicro,
                  },
                  book: {
                    creditedMicro: base + read.reservedMicro + read.outboxMicro,
                    spentMicro: (base * BigInt(o.spentShare)) / 100n,
                    grants: o.grants.map((g) => ({
                      grantId: appliedId(g.grant),
                      amountMicro: BigInt(g.amount),
                    })),
                  },
                }),
              );
              break;
            }
            case 'mark':
              await both((s) => s.markTenant({ tenantId: tenants[o.tenant] as string, nowMs: now - o.back }));
              break;
            case 'page':
              await both((s) =>
                s.listTenants({
                  limit: o.limit,
                  ...(o.after < 0 ? {} : { after: tenants[o.after] as string }),
                }),
              );
              break;
            case 'prune':
              await both((s) =>
                s.pruneTenant({ tenantId: tenants[o.tenant] as string, cutoffMs: now - o.back }),
              );
              break;
            case 'flush':
              // Every key of this run's tenants, on both engines: what FLUSHALL leaves of them.
              await deleteKeysWithPrefix(redisUrl, `${keyPrefix}{t:p${SEED}_${run}_`);
              await deleteKeysWithPrefix(redisUrl, `${keyPrefix}{i:tenants}`);
              right.kv.flushAll();
              lateCharged.fill(0n);
              debited.fill(0n);
              break;
          }
          expect(right.replies, `raw replies at step ${step}`).toEqual(left.replies);
          for (const [i, tenantId] of tenants.entries()) {
            // After the steps that can change an outbox.
            if (o.kind === 'finalize' || o.kind === 'drain' || o.kind === 'flush') {
              const balance = `${tenantKey(tenantId)}:bal`;
              const outboxes = await Promise.all([
                outboxOf(stores[0], () => redis.client.hget(balance, 'outbox'), tenantId),
                outboxOf(stores[1], async () => right.kv.hget(balance, 'outbox'), tenantId),
              ]);
              expect(outboxes[1], `outbox of ${tenantId} at step ${step}`).toEqual(outboxes[0]);
              expect(outboxes[0].fieldMicro, `outbox field of ${tenantId} at step ${step}`).toBe(
                outboxes[0].waitingMicro,
              );
            }
            const snapshot = await both((s) => s.snapshot(tenantId));
            expect(
              snapshot.committedMicro + snapshot.reservedMicro <=
                snapshot.creditedMicro + (lateCharged[i] as bigint) + (debited[i] as bigint),
              `invariant for ${tenantId} at step ${step}: ${JSON.stringify(snapshot, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`,
            ).toBe(true);
          }
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    // The threshold checks were not vacuous: markers were set (and so compared) many times.
    expect(thresholdsReached).toBeGreaterThan(RUNS / 4);
    // …and outbox entries were drained (and so compared) many times.
    expect(outboxAcked).toBeGreaterThan(RUNS / 8);
    // …and finalizes carried acknowledgements (and so were compared) many times.
    expect(ackedByFinalize).toBeGreaterThan(RUNS / 4);
    // …and lost reservations were recovered (and so compared) many times.
    expect(recovered).toBeGreaterThan(RUNS / 8);
    // …and debits lowered balances (and so were compared) many times.
    expect(debits).toBeGreaterThan(RUNS / 4);
  }, 300_000);
});
