import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { admitWithPoolGate } from '../../src/budget/admission.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { AdmitInput, AdmitLimits, AdmitResult, OutboxAckEntry } from '../../src/store/contracts.js';
import { FencingOverflow } from '../../src/store/errors.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore, periodOf, tenantKey } from '../../src/store/typed-store.js';
import {
  admitInput,
  ENTRY_ID,
  type EngineUnderTest,
  filePrefix,
  makeEngine,
  NO_LIMITS,
  NOW,
  newTenant,
  spendUsage,
  uniqueTenant,
} from '../support/engines.js';
import { raceFinalizeAgainstReaper } from '../support/reaper-race.js';

const RACE_SEED = Number(process.env.RACE_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** The same contract suite on both engines: the Lua scripts on real Redis, and the memory engine. */
describe.each(['redis', 'memory'] as const)('%s engine', (engineName) => {
  const log = createLogger({ level: 'silent' });
  const keyPrefix = filePrefix();
  let engine: EngineUnderTest;
  beforeAll(() => {
    engine = makeEngine(engineName, { log, keyPrefix });
  });
  afterAll(() => engine.close());

  const store = () => engine.store;

  async function fundedTenant(amountMicro = 1_000n): Promise<string> {
    const tenantId = await newTenant(store());
    const credited = await store().credit({ tenantId, grantId: 'grant_initial', amountMicro });
    expect(credited.status).toBe('CREDITED');
    return tenantId;
  }

  async function admitted(input: AdmitInput): Promise<Extract<AdmitResult, { status: 'ADMITTED' }>> {
    const result = await store().admit(input);
    if (result.status !== 'ADMITTED')
      throw new Error(`expected ADMITTED, got ${JSON.stringify(result, bigints)}`);
    return result;
  }

  describe('admit', () => {
    it('reserves the cost and reports the remaining figures', async () => {
      const tenantId = await fundedTenant();
      const result = await admitted(admitInput(tenantId, { costMicro: 100n }));
      expect(result.remaining).toEqual({
        balanceMicro: 900n,
        tenantMonthlyMicro: null,
        keyMonthlyMicro: null,
      });
      expect(result.tightest).toBeNull();
      expect(result.warning).toBeNull();
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 0n,
        reservedMicro: 100n,
        availableMicro: 900n,
        outboxMicro: 0n,
        present: true,
      });
    });

    it('answers a duplicate (same idempotency key) with the original reservation and the real figures', async () => {
      const tenantId = await fundedTenant();
      const first = await admitted(admitInput(tenantId, { idempotencyKey: 'req_1', costMicro: 100n }));
      const again = await store().admit(admitInput(tenantId, { idempotencyKey: 'req_1', costMicro: 100n }));
      expect(again).toEqual({
        status: 'ALREADY_RESERVED',
        reservationId: first.reservationId,
        amountMicro: 100n,
        state: 'open',
        remaining: { balanceMicro: 900n, tenantMonthlyMicro: null, keyMonthlyMicro: null },
      });
      expect((await store().snapshot(tenantId)).reservedMicro).toBe(100n);
    });

    it('names the tightest dimension after the request', async () => {
      const tenantId = await fundedTenant();
      const result = await admitted(
        admitInput(tenantId, { limits: { ...NO_LIMITS, tenantRpm: 10, keyRpm: 3, keyTpd: 1000 } }),
      );
      expect(result.tightest).toMatchObject({ dimension: 'key_rpm', limit: 3, remaining: 2 });
    });

    it('warns once a scope reaches 80 %', async () => {
      const tenantId = await fundedTenant(1_000n);
      expect((await admitted(admitInput(tenantId, { costMicro: 790n }))).warning).toBeNull();
      expect((await admitted(admitInput(tenantId, { costMicro: 10n }))).warning).toBe('balance');
      const capped = await fundedTenant(1_000_000n);
      const result = await admitted(
        admitInput(capped, { costMicro: 85n, limits: { ...NO_LIMITS, tenantMonthlyCapMicro: 100n } }),
      );
      expect(result.warning).toBe('tenant_monthly');
      expect(result.remaining.tenantMonthlyMicro).toBe(15n);
    });

    it('reports RATE_LIMITED with remaining 0 and a retry time that is exact', async () => {
      const tenantId = await fundedTenant();
      const limits = { ...NO_LIMITS, keyRpm: 2 };
      await admitted(admitInput(tenantId, { limits }));
      await admitted(admitInput(tenantId, { limits }));
      const denied = await store().admit(admitInput(tenantId, { limits }));
      expect(denied).toMatchObject({ status: 'RATE_LIMITED', dimension: 'key_rpm', limit: 2, remaining: 0 });
      if (denied.status !== 'RATE_LIMITED') return;
      expect(denied.retryAfterMs).toBeGreaterThan(0);
      expect(denied.resetAtMs).toBe(NOW + denied.retryAfterMs);
      const early = await store().admit(admitInput(tenantId, { limits, nowMs: denied.resetAtMs - 1 }));
      expect(early.status).toBe('RATE_LIMITED');
      await admitted(admitInput(tenantId, { limits, nowMs: denied.resetAtMs }));
    });

    it('rate-limits each dimension by its own subject', async () => {
      const tenantId = await fundedTenant();
      const limits = { ...NO_LIMITS, userRpm: 1, channelRpm: 2 };
      await admitted(admitInput(tenantId, { userId: 'alice', channelId: 'web', limits }));
      expect(
        await store().admit(admitInput(tenantId, { userId: 'alice', channelId: 'web', limits })),
      ).toMatchObject({
        status: 'RATE_LIMITED',
        dimension: 'user',
      });
      await admitted(admitInput(tenantId, { userId: 'bob', channelId: 'web', limits }));
      expect(
        await store().admit(admitInput(tenantId, { userId: 'carol', channelId: 'web', limits })),
      ).toMatchObject({
        status: 'RATE_LIMITED',
        dimension: 'channel',
      });
    });

    it('refills the burst bucket over time', async () => {
      const tenantId = await fundedTenant();
      const limits = { ...NO_LIMITS, burstCapacity: 2, burstRefillPerMinute: 60 };
      await admitted(admitInput(tenantId, { limits }));
      await admitted(admitInput(tenantId, { limits }));
      const denied = await store().admit(admitInput(tenantId, { limits }));
      expect(denied).toMatchObject({ status: 'RATE_LIMITED', dimension: 'burst', retryAfterMs: 1000 });
      await admitted(admitInput(tenantId, { limits, nowMs: NOW + 1000 }));
    });

    it('refills a per-second bucket (capacity × 60 per minute) to the millisecond, up to the largest TIERS value', async () => {
      const tenantId = await fundedTenant();
      const limits = { ...NO_LIMITS, burstCapacity: 5, burstRefillPerMinute: 5 * 60 };
      for (let i = 0; i < 5; i += 1) await admitted(admitInput(tenantId, { limits }));
      expect(await store().admit(admitInput(tenantId, { limits }))).toMatchObject({
        dimension: 'burst',
        retryAfterMs: 200,
      });
      expect(await store().admit(admitInput(tenantId, { limits, nowMs: NOW + 199 }))).toMatchObject({
        dimension: 'burst',
        retryAfterMs: 1,
      });
      await admitted(admitInput(tenantId, { limits, nowMs: NOW + 200 }));
      // TIERS allows a burst capacity up to 10^7: refilled per second, 6 × 10^8 per minute.
      const largest = { ...NO_LIMITS, burstCapacity: 10_000_000, burstRefillPerMinute: 600_000_000 };
      await admitted(admitInput(await fundedTenant(), { limits: largest }));
    });

    it('counts tokens per day with the estimate, corrected to the actual count by finalize', async () => {
      const tenantId = await fundedTenant();
      const limits = { ...NO_LIMITS, keyTpd: 100 };
      const first = await admitted(admitInput(tenantId, { tokenEstimate: 80, limits }));
      expect(await store().admit(admitInput(tenantId, { tokenEstimate: 30, limits }))).toMatchObject({
        status: 'RATE_LIMITED',
        dimension: 'key_tpd',
      });
      await store().finalize({
        tenantId,
        reservationId: first.reservationId,
        actualCostMicro: 50n,
        spend: spendUsage(20),
        nowMs: NOW,
      });
      await admitted(admitInput(tenantId, { tokenEstimate: 30, limits }));
    });

    it('refuses what the balance, the tenant monthly cap or the key monthly cap cannot cover', async () => {
      const poor = await fundedTenant(50n);
      expect(await store().admit(admitInput(poor, { costMicro: 51n }))).toEqual({
        status: 'BUDGET_EXCEEDED',
        scope: 'balance',
        remainingMicro: 50n,
        limitMicro: 50n,
      });
      const rich = await fundedTenant(1_000_000n);
      expect(
        await store().admit(
          admitInput(rich, { costMicro: 101n, limits: { ...NO_LIMITS, tenantMonthlyCapMicro: 100n } }),
        ),
      ).toEqual({
        status: 'BUDGET_EXCEEDED',
        scope: 'tenant_monthly',
        remainingMicro: 100n,
        limitMicro: 100n,
      });
      expect(
        await store().admit(
          admitInput(rich, { costMicro: 101n, limits: { ...NO_LIMITS, keyMonthlyCapMicro: 100n } }),
        ),
      ).toEqual({ status: 'BUDGET_EXCEEDED', scope: 'key_monthly', remainingMicro: 100n, limitMicro: 100n });
    });

    const strict: AdmitLimits = {
      tenantRpm: 5,
      userRpm: 5,
      channelRpm: 5,
      keyRpm: 5,
      burstCapacity: 5,
      burstRefillPerMinute: 5,
      keyTpd: 1_000,
      tenantMonthlyCapMicro: 10_000n,
      keyMonthlyCapMicro: 10_000n,
    };
    const denials: [string, Partial<AdmitInput>, Partial<AdmitLimits>, number][] = [
      ['tenant', {}, { tenantRpm: 0 }, 0],
      ['user', {}, { userRpm: 0 }, 0],
      ['channel', {}, { channelRpm: 0 }, 0],
      ['burst', {}, { burstCapacity: 0 }, 0],
      ['key_rpm', {}, { keyRpm: 0 }, 0],
      ['key_tpd', { tokenEstimate: 2_000 }, {}, 0],
      ['balance', { costMicro: 1_000_001n }, { tenantMonthlyCapMicro: null, keyMonthlyCapMicro: null }, 0],
      ['tenant_monthly', { costMicro: 10_001n }, { keyMonthlyCapMicro: null }, 0],
      ['key_monthly', { costMicro: 10_001n }, { tenantMonthlyCapMicro: null }, 0],
    ];

    it.each(denials)(
      'a denial on %s consumes nothing in any dimension or scope',
      async (what, inputOverrides, limitOverrides) => {
        const denied = await fundedTenant(1_000_000n);
        const fresh = await fundedTenant(1_000_000n);
        const base = { userId: 'u1', channelId: 'c1' };
        const result = await store().admit(
          admitInput(denied, { ...base, ...inputOverrides, limits: { ...strict, ...limitOverrides } }),
        );
        expect(
          result.status === 'RATE_LIMITED'
            ? result.dimension
            : result.status === 'BUDGET_EXCEEDED'
              ? result.scope
              : result.status,
        ).toBe(what);
        expect(await store().snapshot(denied)).toEqual(await store().snapshot(fresh));
        // The same request under the strict limits now sees exactly what a tenant that was never
        // denied sees: no window, bucket, counter or scope moved.
        const afterDenial = await admitted(admitInput(denied, { ...base, limits: strict }));
        const untouched = await admitted(admitInput(fresh, { ...base, limits: strict }));
        expect({ ...afterDenial, reservationId: '' }).toEqual({ ...untouched, reservationId: '' });
      },
    );

    it.each([
      ['costMicro', { costMicro: -1n }],
      ['costMicro', { costMicro: -5n }],
      ['costMicro', { costMicro: 10n ** 16n }],
      ['tokenEstimate', { tokenEstimate: Number.NaN }],
      ['tokenEstimate', { tokenEstimate: 1.5 }],
      ['tokenEstimate', { tokenEstimate: -1 }],
      ['nowMs', { nowMs: Number.NaN }],
      ['ttlMs', { ttlMs: 0 }],
      ['tenantId', { tenantId: 'a}b' }],
      ['tenantId', { tenantId: 'a:b' }],
      ['keyId', { keyId: '*' }],
      ['userId', { userId: 'x{t:other}' }],
      ['pool', { pool: '' }],
      ['reservationId', { reservationId: 'r:1' }],
      ['keyRpm', { limits: { ...NO_LIMITS, keyRpm: 2.5 } }],
      ['tenantMonthlyCapMicro', { limits: { ...NO_LIMITS, tenantMonthlyCapMicro: -2n } }],
    ] as [string, Partial<AdmitInput>][])(
      'INVALID_INPUT names %s and changes nothing',
      async (field, overrides) => {
        const tenantId = await fundedTenant();
        const before = await store().snapshot(tenantId);
        expect(await store().admit(admitInput(tenantId, overrides))).toEqual({
          status: 'INVALID_INPUT',
          field,
        });
        expect(await store().snapshot(tenantId)).toEqual(before);
      },
    );

    it('refuses a key base that does not belong to the named tenant (script level)', async () => {
      const victim = await fundedTenant();
      const args = [
        'attacker',
        'key_a',
        '',
        '',
        'standard',
        '',
        'res_x',
        '100',
        '10',
        String(NOW),
        '300000',
        '202611',
      ];
      const reply = await engine.runner.run('admit', [tenantKey(victim)], [...args, ...Array(9).fill('-1')]);
      expect(reply).toEqual(['INVALID_INPUT', 'tenantId']);
      expect((await store().snapshot(victim)).reservedMicro).toBe(0n);
    });

    it.each(['NaN', '1.5', '-5', '-0', '00', '', '1e3', '99999999999999999999'])(
      'refuses the raw cost %j',
      async (raw) => {
        const tenantId = await fundedTenant();
        const args = [
          tenantId,
          'key_a',
          '',
          '',
          'standard',
          '',
          'res_raw',
          raw,
          '10',
          String(NOW),
          '300000',
          '202611',
        ];
        const reply = await engine.runner.run(
          'admit',
          [tenantKey(tenantId)],
          [...args, ...Array(9).fill('-1')],
        );
        expect(reply).toEqual(['INVALID_INPUT', 'costMicro']);
      },
    );
  });

  describe('finalize, cancel and reap', () => {
    it('charges min(actual, reserved) and releases the rest', async () => {
      const tenantId = await fundedTenant();
      const a = await admitted(admitInput(tenantId, { costMicro: 100n }));
      const b = await admitted(admitInput(tenantId, { costMicro: 100n }));
      const finalize = (reservationId: string, actualCostMicro: bigint) =>
        store().finalize({ tenantId, reservationId, actualCostMicro, spend: spendUsage(5), nowMs: NOW });
      expect(await finalize(a.reservationId, 60n)).toEqual({
        status: 'FINALIZED',
        chargedMicro: 60n,
        releasedMicro: 40n,
        driftMicro: 0n,
        outboxEntryId: ENTRY_ID,
      });
      expect(await finalize(b.reservationId, 150n)).toMatchObject({
        status: 'FINALIZED',
        chargedMicro: 100n,
        releasedMicro: 0n,
      });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 160n,
        reservedMicro: 0n,
        availableMicro: 840n,
        // The charge waits in the outbox until a drain writes it to the book.
        outboxMicro: 160n,
        present: true,
      });
    });

    it('finalize twice: ALREADY_FINALIZED with the first charge, no change', async () => {
      const tenantId = await fundedTenant();
      const { reservationId } = await admitted(admitInput(tenantId));
      await store().finalize({
        tenantId,
        reservationId,
        actualCostMicro: 70n,
        spend: spendUsage(1),
        nowMs: NOW,
      });
      const before = await store().snapshot(tenantId);
      expect(
        await store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: 90n,
          spend: spendUsage(1),
          nowMs: NOW,
        }),
      ).toEqual({ status: 'ALREADY_FINALIZED', chargedMicro: 70n });
      expect(await store().snapshot(tenantId)).toEqual(before);
    });

    it('cancel releases everything and charges nothing', async () => {
      const tenantId = await fundedTenant();
      const { reservationId } = await admitted(admitInput(tenantId));
      expect(await store().cancel({ tenantId, reservationId, nowMs: NOW })).toMatchObject({
        status: 'FINALIZED',
        chargedMicro: 0n,
        releasedMicro: 100n,
      });
      expect((await store().snapshot(tenantId)).availableMicro).toBe(1_000n);
    });

    it('an unknown reservation is INVALID_INPUT', async () => {
      const tenantId = await fundedTenant();
      expect(
        await store().finalize({
          tenantId,
          reservationId: 'res_unknown',
          actualCostMicro: 1n,
          spend: spendUsage(0),
          nowMs: NOW,
        }),
      ).toEqual({ status: 'INVALID_INPUT', field: 'reservationId' });
    });

    it('a cancel that arrives before its admit leaves a tombstone: the late admit reserves nothing', async () => {
      const tenantId = await fundedTenant();
      const late = admitInput(tenantId, { idempotencyKey: 'req_late' });
      const cancel = { tenantId, reservationId: late.reservationId, nowMs: NOW };
      expect(await store().cancel(cancel)).toEqual({ status: 'CANCELLED_BEFORE_ADMIT' });
      // Idempotent: the retried cancel answers the same and changes nothing.
      expect(await store().cancel(cancel)).toEqual({ status: 'CANCELLED_BEFORE_ADMIT' });
      expect(await store().admit(late)).toEqual({ status: 'CANCELLED' });
      expect(await store().admit(late)).toEqual({ status: 'CANCELLED' });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 0n,
        reservedMicro: 0n,
        availableMicro: 1_000n,
        outboxMicro: 0n,
        present: true,
      });
      // The idempotency key was never taken: the request may be sent again under a new id.
      expect((await admitted(admitInput(tenantId, { idempotencyKey: 'req_late' }))).reservationId).not.toBe(
        late.reservationId,
      );
    });

    it('a charge naming a tombstoned id is INVALID_INPUT, and a finalize of 0 for an unknown id still is', async () => {
      const tenantId = await fundedTenant();
      await store().cancel({ tenantId, reservationId: 'res_gone', nowMs: NOW });
      const finalize = { tenantId, spend: spendUsage(0), nowMs: NOW };
      expect(await store().finalize({ ...finalize, reservationId: 'res_gone', actualCostMicro: 5n })).toEqual(
        {
          status: 'INVALID_INPUT',
          field: 'reservationId',
        },
      );
      expect(
        await store().finalize({ ...finalize, reservationId: 'res_never', actualCostMicro: 0n }),
      ).toEqual({
        status: 'INVALID_INPUT',
        field: 'reservationId',
      });
      expect((await store().snapshot(tenantId)).committedMicro).toBe(0n);
    });

    it('reaps only expired reservations, then a late finalize still charges (LATE_FINALIZE)', async () => {
      const tenantId = await fundedTenant();
      const expiring = await admitted(admitInput(tenantId, { ttlMs: 1_000 }));
      await admitted(admitInput(tenantId, { ttlMs: 600_000 }));
      expect(await store().reap({ tenantId, nowMs: NOW + 999 })).toMatchObject({
        status: 'REAPED',
        count: 0,
      });
      expect(await store().reap({ tenantId, nowMs: NOW + 1_000 })).toEqual({
        status: 'REAPED',
        count: 1,
        releasedMicro: 100n,
        driftMicro: 0n,
      });
      expect((await store().snapshot(tenantId)).reservedMicro).toBe(100n);
      expect(
        await store().finalize({
          tenantId,
          reservationId: expiring.reservationId,
          actualCostMicro: 500n,
          spend: spendUsage(3),
          nowMs: NOW + 2_000,
        }),
      ).toEqual({
        status: 'LATE_FINALIZE',
        chargedMicro: 100n,
        overspend: false,
        driftMicro: 0n,
        outboxEntryId: ENTRY_ID,
      });
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 100n, reservedMicro: 100n });
      expect(await store().reap({ tenantId, nowMs: NOW + 5_000 })).toMatchObject({ count: 0 });
    });

    it('clamps `reserved` at 0 on drift, and reports it as a log line and a metric', async () => {
      const lines: string[] = [];
      const metrics = createMetrics();
      const watched = makeEngine(engineName, {
        log: createLogger({ level: 'warn', destination: { write: (line: string) => void lines.push(line) } }),
        metrics,
      });
      try {
        const tenantId = await newTenant(watched.store);
        await watched.store.credit({ tenantId, grantId: 'g', amountMicro: 1_000n });
        const admittedNow = await watched.store.admit(admitInput(tenantId, { costMicro: 100n }));
        if (admittedNow.status !== 'ADMITTED') throw new Error(admittedNow.status);
        // Something outside the scripts lost 70 of the 100 reserved.
        await watched.setHashRaw(`${tenantKey(tenantId)}:bal`, 'reserved', '30');
        expect(
          await watched.store.finalize({
            tenantId,
            reservationId: admittedNow.reservationId,
            actualCostMicro: 40n,
            spend: spendUsage(1),
            nowMs: NOW,
          }),
        ).toEqual({
          status: 'FINALIZED',
          chargedMicro: 40n,
          releasedMicro: 60n,
          driftMicro: 70n,
          outboxEntryId: ENTRY_ID,
        });
        expect((await watched.store.snapshot(tenantId)).reservedMicro).toBe(0n);
        const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
        expect(logged).toContainEqual(
          expect.objectContaining({
            msg: 'ACCOUNTING_DRIFT',
            tenantId,
            amountMicro: '70',
            where: 'finalize',
          }),
        );
        expect(
          await metrics.registry.getSingleMetricAsString('spicegate_accounting_drift_micro_total'),
        ).toContain('spicegate_accounting_drift_micro_total{where="finalize"} 70');
      } finally {
        await watched.close();
      }
    });

    it('flags a late finalize that takes the tenant past its credit (OVERSPEND)', async () => {
      const tenantId = await fundedTenant(100n);
      const first = await admitted(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
      await store().reap({ tenantId, nowMs: NOW + 1_000 });
      await admitted(admitInput(tenantId, { costMicro: 100n, nowMs: NOW + 1_000 }));
      expect(
        await store().finalize({
          tenantId,
          reservationId: first.reservationId,
          actualCostMicro: 100n,
          spend: spendUsage(1),
          nowMs: NOW + 1_500,
        }),
      ).toMatchObject({ status: 'LATE_FINALIZE', chargedMicro: 100n, overspend: true });
    });

    it(
      engineName === 'redis'
        ? `finalize racing the reaper over 4 connections, past the deadline, releases each of 200 reservations exactly once (seed ${RACE_SEED})`
        : `finalize and the reaper in a shuffled order, past the deadline, release each of 200 reservations exactly once, whichever comes first (one call at a time: the engine is single-threaded; seed ${RACE_SEED})`,
      async () => {
        // Redis: separate connections on the engine's keys, so the scripts really interleave.
        const runners =
          engineName === 'redis'
            ? Array.from({ length: 4 }, () => redisRunner({ url: inject('redisUrl'), log, keyPrefix }))
            : [];
        try {
          const stores =
            runners.length === 0 ? [store()] : runners.map((runner) => createStore(runner, { log }));
          const outcome = await raceFinalizeAgainstReaper(stores, {
            seed: RACE_SEED,
            tenantPrefix: uniqueTenant(),
            tenants: 50,
            reservations: 200,
          });
          // The race was run: finalize claimed some reservations first and the reaper others.
          expect(outcome.finalized).toBeGreaterThan(0);
          expect(outcome.reaped).toBeGreaterThan(0);
        } finally {
          await Promise.all(runners.map((runner) => runner.close()));
        }
      },
    );

    it('settles into the month the reservation was made in', async () => {
      const tenantId = await fundedTenant(1_000_000n);
      const limits = { ...NO_LIMITS, tenantMonthlyCapMicro: 1_000n, keyMonthlyCapMicro: 1_000n };
      const lastMsOfNovember = Date.UTC(2026, 11, 1) - 1;
      const firstOfDecember = Date.UTC(2026, 11, 1);
      const november = await admitted(
        admitInput(tenantId, { costMicro: 600n, nowMs: lastMsOfNovember, limits }),
      );
      await store().finalize({
        tenantId,
        reservationId: november.reservationId,
        actualCostMicro: 500n,
        spend: spendUsage(1),
        nowMs: firstOfDecember,
      });
      // December's counters are untouched: the whole cap is available.
      const december = await admitted(
        admitInput(tenantId, { costMicro: 1_000n, nowMs: firstOfDecember, limits }),
      );
      expect(december.remaining).toMatchObject({ tenantMonthlyMicro: 0n, keyMonthlyMicro: 0n });
      // November kept the 500 charged (and released the other 100).
      expect(
        await store().admit(admitInput(tenantId, { costMicro: 501n, nowMs: lastMsOfNovember, limits })),
      ).toEqual({
        status: 'BUDGET_EXCEEDED',
        scope: 'tenant_monthly',
        remainingMicro: 500n,
        limitMicro: 1_000n,
      });
    });
  });

  describe('free (zero-cost) admission, admit v2', () => {
    it('admits with no credits at all, reserves nothing, charges nothing, and never warns', async () => {
      const tenantId = await newTenant(store());
      const limits = { ...NO_LIMITS, tenantMonthlyCapMicro: 0n, keyMonthlyCapMicro: 0n };
      const result = await admitted(admitInput(tenantId, { costMicro: 0n, limits }));
      expect(result.remaining).toEqual({ balanceMicro: 0n, tenantMonthlyMicro: 0n, keyMonthlyMicro: 0n });
      expect(result.warning).toBeNull();
      expect(
        await store().finalize({
          tenantId,
          reservationId: result.reservationId,
          actualCostMicro: 500n,
          spend: spendUsage(7),
          nowMs: NOW,
        }),
      ).toEqual({
        status: 'FINALIZED',
        chargedMicro: 0n,
        releasedMicro: 0n,
        driftMicro: 0n,
        outboxEntryId: ENTRY_ID,
      });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 0n,
        committedMicro: 0n,
        reservedMicro: 0n,
        availableMicro: 0n,
        outboxMicro: 0n,
        present: true,
      });
    });

    it('leaves a funded tenant untouched, even at 80 % of its credits', async () => {
      const tenantId = await fundedTenant(1_000n);
      const paid = await admitted(admitInput(tenantId, { costMicro: 850n }));
      expect(paid.warning).toBe('balance');
      const free = await admitted(admitInput(tenantId, { costMicro: 0n }));
      expect(free.warning).toBeNull();
      expect(free.remaining.balanceMicro).toBe(150n);
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 0n, reservedMicro: 850n });
    });

    it('still counts in every rate-limit dimension and the tokens per day', async () => {
      const tenantId = await newTenant(store());
      const limits = { ...NO_LIMITS, keyRpm: 2, keyTpd: 25 };
      await admitted(admitInput(tenantId, { costMicro: 0n, tokenEstimate: 10, limits }));
      await admitted(admitInput(tenantId, { costMicro: 0n, tokenEstimate: 10, limits }));
      expect(
        await store().admit(admitInput(tenantId, { costMicro: 0n, tokenEstimate: 1, limits })),
      ).toMatchObject({ status: 'RATE_LIMITED', dimension: 'key_rpm' });
      expect(
        await store().admit(
          admitInput(tenantId, { costMicro: 0n, tokenEstimate: 10, limits: { ...NO_LIMITS, keyTpd: 25 } }),
        ),
      ).toMatchObject({ status: 'RATE_LIMITED', dimension: 'key_tpd' });
    });

    it('a settled free request keeps its idempotency key; a cancelled one frees it (finalize v2)', async () => {
      const tenantId = await newTenant(store());
      const first = await admitted(admitInput(tenantId, { costMicro: 0n, idempotencyKey: 'idem_free' }));
      await store().finalize({
        tenantId,
        reservationId: first.reservationId,
        actualCostMicro: 30n,
        spend: spendUsage(4),
        nowMs: NOW,
      });
      expect(
        await store().admit(admitInput(tenantId, { costMicro: 0n, idempotencyKey: 'idem_free' })),
      ).toMatchObject({ status: 'ALREADY_RESERVED', reservationId: first.reservationId, state: 'finalized' });

      const cancelled = await admitted(admitInput(tenantId, { costMicro: 0n, idempotencyKey: 'idem_gone' }));
      await store().cancel({ tenantId, reservationId: cancelled.reservationId, nowMs: NOW });
      const retried = await admitted(admitInput(tenantId, { costMicro: 0n, idempotencyKey: 'idem_gone' }));
      expect(retried.reservationId).not.toBe(cancelled.reservationId);
    });

    it('a late finalize that charges nothing is never an OVERSPEND, even on an overspent tenant', async () => {
      const tenantId = await fundedTenant(100n);
      const paid = await admitted(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
      const free = await admitted(admitInput(tenantId, { costMicro: 0n, ttlMs: 1_000 }));
      await store().reap({ tenantId, nowMs: NOW + 1_000 });
      // Something else took the tenant past its credit while the paid one was reaped.
      await engine.setHashRaw(`${tenantKey(tenantId)}:bal`, 'committed', '150');
      const finalize = (reservationId: string) =>
        store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: 10n,
          spend: spendUsage(1),
          nowMs: NOW + 2_000,
        });
      expect(await finalize(free.reservationId)).toMatchObject({ status: 'LATE_FINALIZE', overspend: false });
      expect(await finalize(paid.reservationId)).toMatchObject({ status: 'LATE_FINALIZE', overspend: true });
    });

    it('a reaped free reservation releases nothing and a late finalize charges nothing', async () => {
      const tenantId = await fundedTenant(1_000n);
      const free = await admitted(admitInput(tenantId, { costMicro: 0n, ttlMs: 1_000 }));
      expect(await store().reap({ tenantId, nowMs: NOW + 1_000 })).toEqual({
        status: 'REAPED',
        count: 1,
        releasedMicro: 0n,
        driftMicro: 0n,
      });
      expect(
        await store().finalize({
          tenantId,
          reservationId: free.reservationId,
          actualCostMicro: 40n,
          spend: spendUsage(3),
          nowMs: NOW + 2_000,
        }),
      ).toEqual({
        status: 'LATE_FINALIZE',
        chargedMicro: 0n,
        overspend: false,
        driftMicro: 0n,
        outboxEntryId: ENTRY_ID,
      });
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 0n, reservedMicro: 0n });
    });
  });

  describe('the outbox: budget_finalize v4, outbox_read, outbox_ack', () => {
    const balance = (tenantId: string) => `${tenantKey(tenantId)}:bal`;
    const waitingMicro = async (tenantId: string) => engine.getHashRaw(balance(tenantId), 'outbox');
    async function outbox(tenantId: string, count = 1000) {
      const read = await store().outboxRead({ tenantId, count });
      if (read.status !== 'OUTBOX') throw new Error(`outbox_read refused ${read.field}`);
      return read.entries;
    }

    it('a settlement appends everything its spend row needs, and its charge to the balance’s `outbox`', async () => {
      const tenantId = await fundedTenant();
      const paid = await admitted(admitInput(tenantId, { costMicro: 100n, pool: 'cheap', keyId: 'sandbox' }));
      expect(
        await store().finalize({
          tenantId,
          reservationId: paid.reservationId,
          actualCostMicro: 60n,
          nowMs: NOW + 5,
          spend: { keyId: 'key_real', promptTokens: 3, completionTokens: 7, free: false },
        }),
      ).toMatchObject({ status: 'FINALIZED', chargedMicro: 60n });
      const free = await admitted(admitInput(tenantId, { costMicro: 0n }));
      await store().finalize({
        tenantId,
        reservationId: free.reservationId,
        actualCostMicro: 40n,
        nowMs: NOW + 6,
        spend: spendUsage(4, { free: true }),
      });
      // A release (nothing delivered) is a settlement of 0: its row is written too.
      const released = await admitted(admitInput(tenantId, { costMicro: 100n }));
      await store().finalize({
        tenantId,
        reservationId: released.reservationId,
        actualCostMicro: 0n,
        nowMs: NOW + 7,
        spend: spendUsage(0),
      });

      const entries = await outbox(tenantId);
      expect(entries.map(({ id: _, ...entry }) => entry)).toEqual([
        {
          reservationId: paid.reservationId,
          // The row's API key, not the reservation's limit subject; the pool from the reservation.
          keyId: 'key_real',
          pool: 'cheap',
          promptTokens: 3,
          completionTokens: 7,
          costMicro: 60n,
          chargedMicro: 60n,
          free: false,
          settledAtMs: NOW + 5,
        },
        {
          reservationId: free.reservationId,
          keyId: 'key_a',
          pool: 'standard',
          promptTokens: 0,
          completionTokens: 4,
          // A free request is recorded at its notional cost and charged nothing.
          costMicro: 40n,
          chargedMicro: 0n,
          free: true,
          settledAtMs: NOW + 6,
        },
        {
          reservationId: released.reservationId,
          keyId: 'key_a',
          pool: 'standard',
          promptTokens: 0,
          completionTokens: 0,
          costMicro: 0n,
          chargedMicro: 0n,
          free: false,
          settledAtMs: NOW + 7,
        },
      ]);
      // Stream ids, oldest first.
      const ids = entries.map((entry) => entry.id);
      for (const id of ids) expect(id).toMatch(/^\d+-\d+$/);
      const order = (id: string) => id.split('-').map(BigInt) as [bigint, bigint];
      for (let i = 1; i < ids.length; i += 1) {
        const [ms, seq] = order(ids[i] as string);
        const [prevMs, prevSeq] = order(ids[i - 1] as string);
        expect(ms > prevMs || (ms === prevMs && seq > prevSeq)).toBe(true);
      }
      expect(await waitingMicro(tenantId)).toBe('60');
      // COUNT: the oldest first.
      expect((await outbox(tenantId, 2)).map((entry) => entry.id)).toEqual(ids.slice(0, 2));
    });

    it('a late finalize (after the reaper) appends its charge as well', async () => {
      const tenantId = await fundedTenant();
      const late = await admitted(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
      await store().reap({ tenantId, nowMs: NOW + 1_000 });
      expect(
        await store().finalize({
          tenantId,
          reservationId: late.reservationId,
          actualCostMicro: 30n,
          nowMs: NOW + 2_000,
          spend: spendUsage(2),
        }),
      ).toMatchObject({ status: 'LATE_FINALIZE', chargedMicro: 30n });
      expect(await outbox(tenantId)).toEqual([
        expect.objectContaining({ reservationId: late.reservationId, chargedMicro: 30n, costMicro: 30n }),
      ]);
      expect(await waitingMicro(tenantId)).toBe('30');
    });

    it('appends nothing for ALREADY_FINALIZED, a cancel, a cancel before admit, or a refused finalize', async () => {
      const tenantId = await fundedTenant();
      const once = await admitted(admitInput(tenantId));
      const finalize = (reservationId: string, actualCostMicro: bigint) =>
        store().finalize({ tenantId, reservationId, actualCostMicro, nowMs: NOW, spend: spendUsage(1) });
      await finalize(once.reservationId, 50n);
      expect(await finalize(once.reservationId, 50n)).toEqual({
        status: 'ALREADY_FINALIZED',
        chargedMicro: 50n,
      });
      const cancelled = await admitted(admitInput(tenantId));
      expect(
        await store().cancel({ tenantId, reservationId: cancelled.reservationId, nowMs: NOW }),
      ).toMatchObject({
        status: 'FINALIZED',
        chargedMicro: 0n,
      });
      expect(await store().cancel({ tenantId, reservationId: 'res_not_yet', nowMs: NOW })).toEqual({
        status: 'CANCELLED_BEFORE_ADMIT',
      });
      expect(await finalize('res_unknown', 5n)).toEqual({ status: 'INVALID_INPUT', field: 'reservationId' });
      expect((await outbox(tenantId)).map((entry) => entry.reservationId)).toEqual([once.reservationId]);
      expect(await waitingMicro(tenantId)).toBe('50');
    });

    it.each([
      ['keyId', ['key:other', '0', '1', '0'], 'keyId'],
      ['no keyId with a charge (only a cancel may omit it)', ['', '0', '1', '0'], 'keyId'],
      ['promptTokens', ['key_a', '-1', '1', '0'], 'promptTokens'],
      ['promptTokens not canonical', ['key_a', '01', '1', '0'], 'promptTokens'],
      ['completionTokens', ['key_a', '0', '1000000001', '0'], 'completionTokens'],
      ['free', ['key_a', '0', '1', 'true'], 'free'],
      ['free, for a reservation that reserved money', ['key_a', '0', '1', '1'], 'free'],
    ])('refuses a bad %s before any write', async (_name, spendArgs, field) => {
      const tenantId = await fundedTenant();
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      expect(
        await engine.runner.run(
          'budget_finalize',
          [tenantKey(tenantId)],
          [reservationId, '50', '1', String(NOW), ...spendArgs],
        ),
      ).toEqual(['INVALID_INPUT', field]);
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 0n, reservedMicro: 100n });
      expect(await outbox(tenantId)).toEqual([]);
      expect(await waitingMicro(tenantId)).toBeNull();
    });

    it('an ack deletes the entries it names and takes each charge off once, however often it is acknowledged', async () => {
      const tenantId = await fundedTenant();
      for (const cost of [10n, 20n, 40n]) {
        const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
        await store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: cost,
          nowMs: NOW,
          spend: spendUsage(1),
        });
      }
      const [a, b, c] = (await outbox(tenantId)).map(({ id, reservationId }) => ({ id, reservationId })) as [
        OutboxAckEntry,
        OutboxAckEntry,
        OutboxAckEntry,
      ];
      expect(await waitingMicro(tenantId)).toBe('70');
      // Two drainers acknowledging the same entries at once.
      const both = await Promise.all([
        store().outboxAck({ tenantId, entries: [a, b] }),
        store().outboxAck({ tenantId, entries: [a, b] }),
      ]);
      expect(both).toContainEqual({ status: 'ACKED', deleted: 2, releasedMicro: 30n });
      expect(both).toContainEqual({ status: 'ACKED', deleted: 0, releasedMicro: 0n });
      expect(await waitingMicro(tenantId)).toBe('40');
      // One id twice in a call, and an id that was never there.
      expect(
        await store().outboxAck({ tenantId, entries: [c, c, { id: '1-0', reservationId: 'res_never' }] }),
      ).toEqual({
        status: 'ACKED',
        deleted: 1,
        releasedMicro: 40n,
      });
      expect(await waitingMicro(tenantId)).toBe('0');
      expect(await outbox(tenantId)).toEqual([]);
      // The stream keeps its last id: a later entry sorts after every deleted one.
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      await store().finalize({
        tenantId,
        reservationId,
        actualCostMicro: 5n,
        nowMs: NOW,
        spend: spendUsage(1),
      });
      const [next] = (await outbox(tenantId)).map((entry) => entry.id.split('-').map(BigInt));
      const [cMs, cSeq] = c.id.split('-').map(BigInt) as [bigint, bigint];
      expect((next?.[0] ?? 0n) > cMs || (next?.[0] === cMs && (next?.[1] ?? 0n) > cSeq)).toBe(true);
    });

    it('an ack deletes an entry only when its reservation matches too (an id issued again after a data loss)', async () => {
      const tenantId = await fundedTenant();
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      await store().finalize({
        tenantId,
        reservationId,
        actualCostMicro: 25n,
        nowMs: NOW,
        spend: spendUsage(1),
      });
      const [entry] = await outbox(tenantId);
      if (entry === undefined) throw new Error('no outbox entry');
      expect(
        await store().outboxAck({ tenantId, entries: [{ id: entry.id, reservationId: 'res_before_loss' }] }),
      ).toEqual({
        status: 'ACKED',
        deleted: 0,
        releasedMicro: 0n,
      });
      expect(await outbox(tenantId)).toHaveLength(1);
      expect(await waitingMicro(tenantId)).toBe('25');
      expect(await store().outboxAck({ tenantId, entries: [{ id: entry.id, reservationId }] })).toEqual({
        status: 'ACKED',
        deleted: 1,
        releasedMicro: 25n,
      });
      expect(await waitingMicro(tenantId)).toBe('0');
    });

    it('an ack clamps `outbox` at 0, and never writes a balance that is absent (that one is rebuilt by hydrate)', async () => {
      const tenantId = await fundedTenant();
      for (let i = 0; i < 2; i += 1) {
        const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
        await store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: 60n,
          nowMs: NOW,
          spend: spendUsage(1),
        });
      }
      const [first, second] = (await outbox(tenantId)).map(({ id, reservationId }) => ({
        id,
        reservationId,
      })) as [OutboxAckEntry, OutboxAckEntry];
      await engine.setHashRaw(balance(tenantId), 'outbox', '10');
      expect(await store().outboxAck({ tenantId, entries: [first] })).toMatchObject({
        deleted: 1,
        releasedMicro: 60n,
      });
      expect(await waitingMicro(tenantId)).toBe('0');
      await engine.deleteRaw(balance(tenantId));
      expect(await store().outboxAck({ tenantId, entries: [second] })).toMatchObject({
        deleted: 1,
        releasedMicro: 60n,
      });
      expect(await store().admit(admitInput(tenantId))).toEqual({ status: 'HYDRATE' });
    });

    it('a read with olderThanMs returns only the entries appended before that time', async () => {
      const tenantId = await fundedTenant();
      for (let i = 0; i < 3; i += 1) {
        const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
        await store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: 5n,
          nowMs: NOW,
          spend: spendUsage(1),
        });
        // Entries a few ms apart, so a bound can fall between them.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const all = await outbox(tenantId);
      const msOf = (id: string) => Number(id.split('-')[0]);
      const read = async (olderThanMs: number) => {
        const result = await store().outboxRead({ tenantId, count: 1000, olderThanMs });
        if (result.status !== 'OUTBOX') throw new Error(result.field);
        return result.entries.map((entry) => entry.id);
      };
      const first = msOf(all[0]?.id ?? '');
      const last = msOf(all[2]?.id ?? '');
      expect(last).toBeGreaterThan(first);
      expect(await read(first)).toEqual([]);
      expect(await read(first + 1)).toEqual(all.filter((entry) => msOf(entry.id) <= first).map((e) => e.id));
      expect(await read(last)).toEqual(all.filter((entry) => msOf(entry.id) < last).map((e) => e.id));
      expect(await read(last + 1)).toEqual(all.map((entry) => entry.id));
      for (const bound of ['0', '01', 'x', '140737488355329', '-5']) {
        expect(await engine.runner.run('outbox_read', [tenantKey(tenantId)], ['10', bound])).toEqual([
          'INVALID_INPUT',
          'olderThanMs',
        ]);
      }
    });

    it('read and ack refuse bad arguments; an empty ack is answered without a store call', async () => {
      const tenantId = await fundedTenant();
      for (const count of ['0', '1001', '01', '-1', '']) {
        expect(await engine.runner.run('outbox_read', [tenantKey(tenantId)], [count])).toEqual([
          'INVALID_INPUT',
          'count',
        ]);
      }
      for (const id of [
        'abc',
        '1-',
        '-1',
        '1-2-3',
        '1',
        '12345678901234567890-0',
        '0-12345678901234567890',
      ]) {
        expect(
          await engine.runner.run('outbox_ack', [tenantKey(tenantId)], ['1-0', 'res_a', id, 'res_a']),
        ).toEqual(['INVALID_INPUT', 'ids']);
      }
      expect(await engine.runner.run('outbox_ack', [tenantKey(tenantId)], [])).toEqual([
        'INVALID_INPUT',
        'ids',
      ]);
      // An odd count (an id without its reservation), and a reservation id no script accepts.
      for (const args of [['1-0'], ['1-0', 'res_a', '2-0'], ['1-0', 'res:a'], ['1-0', '']]) {
        expect(await engine.runner.run('outbox_ack', [tenantKey(tenantId)], args)).toEqual([
          'INVALID_INPUT',
          'ids',
        ]);
      }
      expect(await store().outboxAck({ tenantId, entries: [] })).toEqual({
        status: 'ACKED',
        deleted: 0,
        releasedMicro: 0n,
      });
      expect(await store().outboxRead({ tenantId: 'a:b', count: 1 })).toEqual({
        status: 'INVALID_INPUT',
        field: 'tenantId',
      });
    });
  });

  describe('admit v5 and budget_finalize v5: the same answers with fewer commands', () => {
    const base = (tenantId: string) => tenantKey(tenantId);
    async function outbox(tenantId: string) {
      const read = await store().outboxRead({ tenantId, count: 1000 });
      if (read.status !== 'OUTBOX') throw new Error(`outbox_read refused ${read.field}`);
      return read.entries;
    }
    async function settled(tenantId: string, actualCostMicro: bigint): Promise<OutboxAckEntry> {
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      const result = await store().finalize({
        tenantId,
        reservationId,
        actualCostMicro,
        nowMs: NOW,
        spend: spendUsage(1),
      });
      if (result.status !== 'FINALIZED' || result.outboxEntryId === null) throw new Error(result.status);
      return { id: result.outboxEntryId, reservationId };
    }

    it('a finalize acknowledges the outbox entries it carries, by outbox_ack’s rules, in the same call', async () => {
      const tenantId = await fundedTenant();
      const [a, b] = [await settled(tenantId, 10n), await settled(tenantId, 20n)];
      expect(await engine.getHashRaw(`${base(tenantId)}:bal`, 'outbox')).toBe('30');
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      expect(
        await store().finalize({
          tenantId,
          reservationId,
          actualCostMicro: 40n,
          nowMs: NOW,
          spend: spendUsage(1),
          // b's id named with another reservation (an id issued again after a data loss): kept.
          ack: [a, { id: b.id, reservationId: 'res_before_loss' }, a],
        }),
      ).toMatchObject({ status: 'FINALIZED', chargedMicro: 40n });
      expect((await outbox(tenantId)).map((entry) => entry.reservationId)).toEqual([
        b.reservationId,
        reservationId,
      ]);
      // a's 10 left, this settlement's 40 arrived: one write.
      expect(await engine.getHashRaw(`${base(tenantId)}:bal`, 'outbox')).toBe('60');
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 70n, outboxMicro: 60n });
    });

    it('acknowledges with every settling answer, and with none that writes nothing (INVALID_INPUT, HYDRATE)', async () => {
      const tenantId = await fundedTenant();
      const entries = [await settled(tenantId, 1n), await settled(tenantId, 2n), await settled(tenantId, 4n)];
      const [first, second, third] = entries as [OutboxAckEntry, OutboxAckEntry, OutboxAckEntry];
      const settle = (
        reservationId: string,
        actualCostMicro: bigint,
        ack: OutboxAckEntry[],
        recover = false,
      ) =>
        store().finalize({
          tenantId,
          reservationId,
          actualCostMicro,
          nowMs: NOW,
          spend: spendUsage(1),
          ack,
          ...(recover ? { recover: { pool: 'standard' } } : {}),
        });
      // Refused: an unknown id outside recovery, and a bad pair: nothing acknowledged.
      expect(await settle('res_unknown', 5n, [first])).toEqual({
        status: 'INVALID_INPUT',
        field: 'reservationId',
      });
      expect(
        await engine.runner.run(
          'budget_finalize',
          [base(tenantId)],
          [
            first.reservationId,
            '1',
            '1',
            String(NOW),
            'key_a',
            '0',
            '1',
            '0',
            '',
            '',
            'nope',
            first.reservationId,
          ],
        ),
      ).toEqual(['INVALID_INPUT', 'ack']);
      expect(await outbox(tenantId)).toHaveLength(3);
      // ALREADY_FINALIZED acknowledges what it carries.
      expect(await settle(first.reservationId, 1n, [first])).toEqual({
        status: 'ALREADY_FINALIZED',
        chargedMicro: 1n,
      });
      expect((await outbox(tenantId)).map((entry) => entry.reservationId)).toEqual([
        second.reservationId,
        third.reservationId,
      ]);
      expect(await engine.getHashRaw(`${base(tenantId)}:bal`, 'outbox')).toBe('6');
      // So does a cancel of an id never admitted (its tombstone written).
      expect(
        await store().finalize({
          tenantId,
          reservationId: 'res_never',
          actualCostMicro: 0n,
          nowMs: NOW,
          spend: spendUsage(0),
          ack: [second],
        }),
      ).toEqual({
        status: 'INVALID_INPUT',
        field: 'reservationId',
      });
      expect(await engine.getHashRaw(`${base(tenantId)}:bal`, 'outbox')).toBe('4');
      // HYDRATE (recovery, the balance absent) writes nothing; the call again after hydrate does.
      await engine.deleteRaw(`${base(tenantId)}:bal`);
      expect(await settle('res_lost', 3n, [third], true)).toEqual({ status: 'HYDRATE' });
      expect(await outbox(tenantId)).toHaveLength(1);
      await store().hydrate({ tenantId, creditedMicro: 1_000n, committedMicro: 0n, grants: [] });
      expect(await settle('res_lost', 3n, [third], true)).toMatchObject({
        status: 'RECOVERED',
        chargedMicro: 3n,
      });
      expect((await outbox(tenantId)).map((entry) => entry.reservationId)).toEqual(['res_lost']);
    });

    it('sets a counter’s expiry when a write creates it, not on every request', async () => {
      const tenantId = await fundedTenant();
      const limits = {
        ...NO_LIMITS,
        tenantRpm: 100,
        keyRpm: 100,
        keyTpd: 1_000,
        burstCapacity: 5,
        burstRefillPerMinute: 300,
      };
      const minute = Math.floor(NOW / 60_000);
      const day = Math.floor(NOW / 86_400_000);
      const window = (name: string, subject: string, idx: number) =>
        `${base(tenantId)}:w:${name}:${subject}:${idx}`;
      const counters = [
        window('tenant', '*', minute),
        window('key_rpm', 'key_a', minute),
        `${base(tenantId)}:tpd:key_a:${day}`,
        `${base(tenantId)}:m:${periodOf(NOW)}`,
        `${base(tenantId)}:km:key_a:${periodOf(NOW)}`,
      ];
      const ttls = () => Promise.all(counters.map((key) => engine.ttlRaw(key)));
      const near = (expected: number) =>
        expect.toSatisfy((ttl: number) => ttl > expected - 60_000 && ttl <= expected);
      const DAY = 86_400_000;
      await admitted(admitInput(tenantId, { limits }));
      expect(await ttls()).toEqual([
        near(600_000),
        near(600_000),
        near(2 * DAY),
        near(400 * DAY),
        near(400 * DAY),
      ]);
      // The next request in the same minute and day renews none of them.
      for (const key of counters) await engine.expireRaw(key, 3_600_000);
      await admitted(admitInput(tenantId, { limits, nowMs: NOW + 1_000 }));
      expect(await ttls()).toEqual(Array(5).fill(near(3_600_000)));
      // The next minute's counters get theirs when created; the burst bucket carries its own.
      await admitted(admitInput(tenantId, { limits, nowMs: NOW + 60_000 }));
      expect(await engine.ttlRaw(window('tenant', '*', minute + 1))).toEqual(near(600_000));
      expect(await engine.ttlRaw(`${base(tenantId)}:bk:*`)).toEqual(near(DAY));
      expect(await engine.getHashRaw(`${base(tenantId)}:bal`, 'reserved')).toBe('300');
    });

    it('a reservation admit v4 made (rolling deploy) still has its tokens of the day corrected in v4’s key', async () => {
      const tenantId = await fundedTenant();
      const day = Math.floor(NOW / 86_400_000);
      const v4Key = `${base(tenantId)}:tpd:key_a:${day}`;
      await engine.setRaw(v4Key, '80');
      // As admit v4 leaves one: no `tpdh`, 100 µ reserved on every counter.
      const resKey = `${base(tenantId)}:res:res_v4`;
      const fields = {
        state: 'open',
        keyId: 'key_a',
        pool: 'standard',
        amount: '100',
        tokens: '80',
        period: periodOf(NOW),
        day: String(day),
        idem: '',
      };
      for (const [field, value] of Object.entries(fields)) await engine.setHashRaw(resKey, field, value);
      for (const counter of ['bal', `m:${periodOf(NOW)}`, `km:key_a:${periodOf(NOW)}`])
        await engine.setHashRaw(`${base(tenantId)}:${counter}`, 'reserved', '100');
      expect(
        await store().finalize({
          tenantId,
          reservationId: 'res_v4',
          actualCostMicro: 30n,
          nowMs: NOW,
          spend: spendUsage(20),
        }),
      ).toMatchObject({ status: 'FINALIZED', chargedMicro: 30n, releasedMicro: 70n, driftMicro: 0n });
      expect(
        'client' in engine.runner ? await engine.runner.client.get(v4Key) : engine.runner.kv.get(v4Key),
      ).toBe('20');
    });
  });

  describe('recovery: budget_finalize v4 bills a reservation the store lost', () => {
    const recover = { pool: 'standard' };
    const lost = (tenantId: string, reservationId: string, actualCostMicro: bigint, free = false) =>
      store().finalize({
        tenantId,
        reservationId,
        actualCostMicro,
        nowMs: NOW,
        spend: spendUsage(4, { keyId: 'key_lost', promptTokens: 2, free }),
        recover,
      });
    const counters = async (tenantId: string) => ({
      month: await engine.getHashRaw(`${tenantKey(tenantId)}:m:${periodOf(NOW)}`, 'committed'),
      keyMonth: await engine.getHashRaw(`${tenantKey(tenantId)}:km:key_lost:${periodOf(NOW)}`, 'committed'),
      outbox: await engine.getHashRaw(`${tenantKey(tenantId)}:bal`, 'outbox'),
    });
    async function outbox(tenantId: string) {
      const read = await store().outboxRead({ tenantId, count: 1000 });
      if (read.status !== 'OUTBOX') throw new Error(`outbox_read refused ${read.field}`);
      return read.entries;
    }

    it('an unknown id with a charge: committed to the balance and this month’s counters, appended to the outbox, exactly once', async () => {
      const tenantId = await fundedTenant(1_000n);
      const result = await lost(tenantId, 'res_lost', 300n);
      expect(result).toEqual({
        status: 'RECOVERED',
        chargedMicro: 300n,
        overspend: false,
        outboxEntryId: ENTRY_ID,
      });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 300n,
        reservedMicro: 0n,
        availableMicro: 700n,
        outboxMicro: 300n,
        present: true,
      });
      expect(await counters(tenantId)).toEqual({ month: '300', keyMonth: '300', outbox: '300' });
      const entries = await outbox(tenantId);
      expect(entries).toEqual([
        {
          id: result.status === 'RECOVERED' ? result.outboxEntryId : '',
          reservationId: 'res_lost',
          keyId: 'key_lost',
          pool: 'standard',
          promptTokens: 2,
          completionTokens: 4,
          costMicro: 300n,
          chargedMicro: 300n,
          free: false,
          settledAtMs: NOW,
        },
      ]);
      // A retry (the request path's, or the settlement job's) changes nothing.
      expect(await lost(tenantId, 'res_lost', 300n)).toEqual({
        status: 'ALREADY_FINALIZED',
        chargedMicro: 300n,
      });
      expect((await store().snapshot(tenantId)).committedMicro).toBe(300n);
      expect(await outbox(tenantId)).toHaveLength(1);
      // The recovered reservation names its period and key: its budget thresholds can be checked.
      expect(
        await store().budgetEvent({
          tenantId,
          reservationId: 'res_lost',
          tenantMonthlyCapMicro: 300n,
          keyMonthlyCapMicro: null,
        }),
      ).toMatchObject({
        status: 'THRESHOLDS',
        reached: expect.arrayContaining([
          expect.objectContaining({ scope: 'tenant_monthly', thresholdPercent: 100 }),
        ]),
      });
    });

    it('answers HYDRATE and writes nothing while the balance is absent; recovers once it is rebuilt', async () => {
      const tenantId = uniqueTenant();
      expect(await lost(tenantId, 'res_lost', 250n)).toEqual({ status: 'HYDRATE' });
      expect(await outbox(tenantId)).toEqual([]);
      expect(await counters(tenantId)).toEqual({ month: null, keyMonth: null, outbox: null });
      expect(await store().admit(admitInput(tenantId))).toEqual({ status: 'HYDRATE' });
      await store().hydrate({ tenantId, creditedMicro: 5_000n, committedMicro: 1_000n, grants: [] });
      expect(await lost(tenantId, 'res_lost', 250n)).toMatchObject({
        status: 'RECOVERED',
        chargedMicro: 250n,
      });
      expect(await store().snapshot(tenantId)).toMatchObject({
        committedMicro: 1_250n,
        availableMicro: 3_750n,
      });
    });

    it('a free request is recorded at its notional cost and charged nothing', async () => {
      const tenantId = await fundedTenant(1_000n);
      expect(await lost(tenantId, 'res_free', 80n, true)).toEqual({
        status: 'RECOVERED',
        chargedMicro: 0n,
        overspend: false,
        outboxEntryId: ENTRY_ID,
      });
      expect(await outbox(tenantId)).toEqual([
        expect.objectContaining({ reservationId: 'res_free', costMicro: 80n, chargedMicro: 0n, free: true }),
      ]);
      expect((await store().snapshot(tenantId)).committedMicro).toBe(0n);
      expect(await counters(tenantId)).toEqual({ month: null, keyMonth: null, outbox: null });
    });

    it('a tombstone stays refused, and without recover an unknown id is refused', async () => {
      const tenantId = await fundedTenant(1_000n);
      await store().cancel({ tenantId, reservationId: 'res_cancelled', nowMs: NOW });
      expect(await lost(tenantId, 'res_cancelled', 100n)).toEqual({
        status: 'INVALID_INPUT',
        field: 'reservationId',
      });
      expect(
        await store().finalize({
          tenantId,
          reservationId: 'res_plain',
          actualCostMicro: 100n,
          nowMs: NOW,
          spend: spendUsage(1),
        }),
      ).toEqual({ status: 'INVALID_INPUT', field: 'reservationId' });
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 0n });
      expect(await outbox(tenantId)).toEqual([]);
    });

    it('a charge of 0 for a lost reservation is recorded, not tombstoned, once (no HYDRATE: nothing to commit)', async () => {
      const tenantId = uniqueTenant();
      // No balance at all: a charge of 0 needs none.
      expect(await lost(tenantId, 'res_nothing', 0n)).toEqual({
        status: 'RECOVERED',
        chargedMicro: 0n,
        overspend: false,
        outboxEntryId: ENTRY_ID,
      });
      expect(await lost(tenantId, 'res_nothing', 0n)).toEqual({
        status: 'ALREADY_FINALIZED',
        chargedMicro: 0n,
      });
      const entries = await outbox(tenantId);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ reservationId: 'res_nothing', chargedMicro: 0n });
      expect((await store().snapshot(tenantId)).present).toBe(false);
    });

    it('a reservation the store still knows settles as usual in recovery mode', async () => {
      const tenantId = await fundedTenant(1_000n);
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro: 100n }));
      expect(await lost(tenantId, reservationId, 60n)).toMatchObject({
        status: 'FINALIZED',
        chargedMicro: 60n,
        releasedMicro: 40n,
      });
    });

    it('a recovery past the credit is an OVERSPEND; each recovery is logged and counted', async () => {
      const lines: string[] = [];
      const metrics = createMetrics();
      const watched = makeEngine(engineName, {
        log: createLogger({ level: 'warn', destination: { write: (line: string) => void lines.push(line) } }),
        metrics,
      });
      try {
        const tenantId = await newTenant(watched.store);
        await watched.store.credit({ tenantId, grantId: 'g', amountMicro: 100n });
        expect(
          await watched.store.finalize({
            tenantId,
            reservationId: 'res_over',
            actualCostMicro: 150n,
            nowMs: NOW,
            spend: spendUsage(1),
            recover,
          }),
        ).toMatchObject({ status: 'RECOVERED', chargedMicro: 150n, overspend: true });
        const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
        expect(logged).toContainEqual(
          expect.objectContaining({
            msg: 'RESERVATION_RECOVERED',
            tenantId,
            reservationId: 'res_over',
            chargedMicro: '150',
          }),
        );
        expect(logged).toContainEqual(
          expect.objectContaining({ msg: 'OVERSPEND', tenantId, reservationId: 'res_over' }),
        );
        expect(
          await metrics.registry.getSingleMetricAsString('spicegate_reservations_recovered_total'),
        ).toContain('spicegate_reservations_recovered_total 1');
        expect(await metrics.registry.getSingleMetricAsString('spicegate_overspend_events_total')).toContain(
          'spicegate_overspend_events_total 1',
        );
      } finally {
        await watched.close();
      }
    });

    it.each([
      ['pool', ['bad:pool', '202611'], 'pool'],
      ['period', ['standard', '2026-11'], 'period'],
      ['missing period', ['standard', ''], 'period'],
    ])('refuses a bad recovery %s before any write', async (_name, recoveryArgs, field) => {
      const tenantId = await fundedTenant();
      expect(
        await engine.runner.run(
          'budget_finalize',
          [tenantKey(tenantId)],
          ['res_bad', '50', '1', String(NOW), 'key_a', '0', '1', '0', ...recoveryArgs],
        ),
      ).toEqual(['INVALID_INPUT', field]);
      expect(await store().snapshot(tenantId)).toMatchObject({ committedMicro: 0n });
      expect(await outbox(tenantId)).toEqual([]);
    });
  });

  describe('budget_event', () => {
    async function settle(tenantId: string, costMicro: bigint, overrides: Partial<AdmitInput> = {}) {
      const { reservationId } = await admitted(admitInput(tenantId, { costMicro, ...overrides }));
      const finalized = await store().finalize({
        tenantId,
        reservationId,
        actualCostMicro: costMicro,
        spend: spendUsage(1),
        nowMs: overrides.nowMs ?? NOW,
      });
      expect(finalized.status).toBe('FINALIZED');
      return reservationId;
    }
    const events = (tenantId: string, reservationId: string, caps: { tenant?: bigint; key?: bigint } = {}) =>
      store().budgetEvent({
        tenantId,
        reservationId,
        tenantMonthlyCapMicro: caps.tenant ?? null,
        keyMonthlyCapMicro: caps.key ?? null,
      });

    it('reports each balance threshold once, at or past it; a top-up starts a new period', async () => {
      const tenantId = await fundedTenant(1_000n);
      const below = await settle(tenantId, 799n);
      expect(await events(tenantId, below)).toEqual({ status: 'THRESHOLDS', reached: [] });
      const at80 = await settle(tenantId, 1n);
      const reached80 = {
        scope: 'balance',
        thresholdPercent: 80,
        period: 'credited:1000',
        usedMicro: 800n,
        limitMicro: 1_000n,
      };
      expect(await events(tenantId, at80)).toEqual({ status: 'THRESHOLDS', reached: [reached80] });
      // Asked again, by anyone: already reported.
      expect(await events(tenantId, at80)).toEqual({ status: 'THRESHOLDS', reached: [] });
      const at100 = await settle(tenantId, 200n);
      expect(await events(tenantId, at100)).toEqual({
        status: 'THRESHOLDS',
        reached: [{ ...reached80, thresholdPercent: 100, usedMicro: 1_000n }],
      });
      expect(await events(tenantId, at100)).toEqual({ status: 'THRESHOLDS', reached: [] });
      // A top-up to 1,100: 1,000 used is past 80 % of the new balance, not yet 100 %.
      await store().credit({ tenantId, grantId: 'topup', amountMicro: 100n });
      expect(await events(tenantId, at100)).toEqual({
        status: 'THRESHOLDS',
        reached: [{ ...reached80, period: 'credited:1100', usedMicro: 1_000n, limitMicro: 1_100n }],
      });
    });

    it('reports 80 and 100 together when one settlement jumps past both', async () => {
      const tenantId = await fundedTenant(1_000_000n);
      const caps = { tenant: 500n };
      const limits = { ...NO_LIMITS, tenantMonthlyCapMicro: 500n };
      const res = await settle(tenantId, 500n, { limits });
      expect(await events(tenantId, res, caps)).toEqual({
        status: 'THRESHOLDS',
        reached: [
          {
            scope: 'tenant_monthly',
            thresholdPercent: 80,
            period: '202611',
            usedMicro: 500n,
            limitMicro: 500n,
          },
          {
            scope: 'tenant_monthly',
            thresholdPercent: 100,
            period: '202611',
            usedMicro: 500n,
            limitMicro: 500n,
          },
        ],
      });
    });

    it("counts the key cap per key, and each month is its own period (the reservation's month)", async () => {
      const tenantId = await fundedTenant(1_000_000n);
      const caps = { key: 100n };
      const limits = { ...NO_LIMITS, keyMonthlyCapMicro: 100n };
      const other = await settle(tenantId, 90n, { keyId: 'key_b', limits });
      const mine = await settle(tenantId, 80n, { limits });
      expect(await events(tenantId, mine, caps)).toEqual({
        status: 'THRESHOLDS',
        reached: [
          { scope: 'key_monthly', thresholdPercent: 80, period: '202611', usedMicro: 80n, limitMicro: 100n },
        ],
      });
      expect(await events(tenantId, other, caps)).toEqual({
        status: 'THRESHOLDS',
        reached: [
          { scope: 'key_monthly', thresholdPercent: 80, period: '202611', usedMicro: 90n, limitMicro: 100n },
        ],
      });
      // Admitted on the last ms of November, settled in December: November's period.
      const lastMsOfNovember = Date.UTC(2026, 11, 1) - 1;
      const december = Date.UTC(2026, 11, 2);
      const late = await admitted(admitInput(tenantId, { costMicro: 20n, nowMs: lastMsOfNovember, limits }));
      await store().finalize({
        tenantId,
        reservationId: late.reservationId,
        actualCostMicro: 20n,
        spend: spendUsage(1),
        nowMs: december,
      });
      expect(await events(tenantId, late.reservationId, caps)).toEqual({
        status: 'THRESHOLDS',
        reached: [
          {
            scope: 'key_monthly',
            thresholdPercent: 100,
            period: '202611',
            usedMicro: 100n,
            limitMicro: 100n,
          },
        ],
      });
      const inDecember = await settle(tenantId, 85n, { nowMs: december, limits });
      expect(await events(tenantId, inDecember, caps)).toEqual({
        status: 'THRESHOLDS',
        reached: [
          { scope: 'key_monthly', thresholdPercent: 80, period: '202612', usedMicro: 85n, limitMicro: 100n },
        ],
      });
    });

    it('is exact near 2^52 (no product passes 2^53)', async () => {
      const tenantId = await newTenant(store());
      const credited = 2n ** 52n - 5n;
      await store().credit({ tenantId, grantId: 'big', amountMicro: 10n ** 15n });
      await engine.setHashRaw(`${tenantKey(tenantId)}:bal`, 'credited', String(credited));
      // 80 % of credited, rounded up, is the first amount that reaches the threshold.
      const threshold = (credited * 4n + 4n) / 5n;
      await engine.setHashRaw(`${tenantKey(tenantId)}:bal`, 'committed', String(threshold - 1n));
      const res = await admitted(admitInput(tenantId, { costMicro: 1n }));
      expect(await events(tenantId, res.reservationId)).toEqual({ status: 'THRESHOLDS', reached: [] });
      await engine.setHashRaw(`${tenantKey(tenantId)}:bal`, 'committed', String(threshold));
      expect(await events(tenantId, res.reservationId)).toMatchObject({
        reached: [{ scope: 'balance', thresholdPercent: 80, usedMicro: threshold, limitMicro: credited }],
      });
    });

    it.each([
      ['reservationId', { reservationId: 'res_unknown' }],
      ['reservationId', { reservationId: 'r:1' }],
      ['tenantMonthlyCapMicro', { tenantMonthlyCapMicro: -2n }],
      ['keyMonthlyCapMicro', { keyMonthlyCapMicro: 10n ** 16n }],
      ['tenantId', { tenantId: 'a}b' }],
    ] as const)('INVALID_INPUT names %s', async (field, overrides) => {
      const tenantId = await fundedTenant();
      const reservationId = await settle(tenantId, 900n);
      expect(
        await store().budgetEvent({
          tenantId,
          reservationId,
          tenantMonthlyCapMicro: null,
          keyMonthlyCapMicro: null,
          ...overrides,
        }),
      ).toEqual({ status: 'INVALID_INPUT', field });
      // Nothing was marked: the 80 % of the balance is still there to report.
      expect(await events(tenantId, reservationId)).toMatchObject({
        reached: [{ scope: 'balance', thresholdPercent: 80, usedMicro: 900n }],
      });
    });
  });

  describe('credit', () => {
    it('applies a grant once', async () => {
      const tenantId = await newTenant(store());
      expect(await store().credit({ tenantId, grantId: 'pay_1', amountMicro: 5_000_000n })).toEqual({
        status: 'CREDITED',
        creditedMicro: 5_000_000n,
        availableMicro: 5_000_000n,
      });
      expect(await store().credit({ tenantId, grantId: 'pay_1', amountMicro: 5_000_000n })).toEqual({
        status: 'ALREADY_APPLIED',
        creditedMicro: 5_000_000n,
        availableMicro: 5_000_000n,
      });
    });

    it.each([0n, -1n, 10n ** 16n])('refuses the amount %s', async (amountMicro) => {
      const tenantId = await newTenant(store());
      expect(await store().credit({ tenantId, grantId: 'g', amountMicro })).toEqual({
        status: 'INVALID_INPUT',
        field: 'amountMicro',
      });
      expect((await store().snapshot(tenantId)).creditedMicro).toBe(0n);
    });
  });

  describe('debit v1 (a refund lowering the balance)', () => {
    it('lowers credited once per debit id; a replay answers ALREADY_APPLIED and changes nothing', async () => {
      const tenantId = await fundedTenant(1_000n);
      const debit = { tenantId, debitId: 'refund-pay_1', amountMicro: 400n };
      expect(await store().debit(debit)).toEqual({
        status: 'DEBITED',
        creditedMicro: 600n,
        availableMicro: 600n,
      });
      expect(await store().debit(debit)).toEqual({
        status: 'ALREADY_APPLIED',
        creditedMicro: 600n,
        availableMicro: 600n,
      });
      expect((await store().snapshot(tenantId)).creditedMicro).toBe(600n);
    });

    it('refuses a debit id applied before with another amount (INVALID_INPUT debitId) and writes nothing', async () => {
      const tenantId = await fundedTenant(1_000n);
      await store().debit({ tenantId, debitId: 'refund-pay_2', amountMicro: 300n });
      expect(await store().debit({ tenantId, debitId: 'refund-pay_2', amountMicro: 301n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'debitId',
      });
      expect((await store().snapshot(tenantId)).creditedMicro).toBe(700n);
      // The applied ids are one record with the grants: a grant id is not debited under its name.
      expect(await store().debit({ tenantId, debitId: 'grant_initial', amountMicro: 5n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'debitId',
      });
    });

    it('refuses to take credited below 0 (INVALID_INPUT amountMicro), records nothing, and takes it to 0 exactly', async () => {
      const tenantId = await fundedTenant(1_000n);
      const before = await store().snapshot(tenantId);
      expect(await store().debit({ tenantId, debitId: 'refund-pay_3', amountMicro: 1_001n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'amountMicro',
      });
      expect(await store().snapshot(tenantId)).toEqual(before);
      // The refused id was not recorded: the same id with an amount that fits is applied.
      expect(await store().debit({ tenantId, debitId: 'refund-pay_3', amountMicro: 1_000n })).toEqual({
        status: 'DEBITED',
        creditedMicro: 0n,
        availableMicro: 0n,
      });
    });

    it('takes credited below committed + reserved (available negative): open reservations stand, new admits stop', async () => {
      const tenantId = await fundedTenant(1_000n);
      const open = await admitted(admitInput(tenantId, { costMicro: 800n }));
      expect(await store().debit({ tenantId, debitId: 'refund-pay_4', amountMicro: 500n })).toEqual({
        status: 'DEBITED',
        creditedMicro: 500n,
        availableMicro: -300n,
      });
      expect(await store().admit(admitInput(tenantId, { costMicro: 1n }))).toMatchObject({
        status: 'BUDGET_EXCEEDED',
        scope: 'balance',
      });
      expect(
        await store().finalize({
          tenantId,
          reservationId: open.reservationId,
          actualCostMicro: 200n,
          nowMs: NOW,
          spend: spendUsage(2),
        }),
      ).toMatchObject({ status: 'FINALIZED', chargedMicro: 200n });
      expect(await store().snapshot(tenantId)).toMatchObject({ creditedMicro: 500n, availableMicro: 300n });
    });

    it('answers HYDRATE and writes nothing while the balance is absent; a debit the book holds is applied by hydrate', async () => {
      const tenantId = uniqueTenant();
      expect(await store().debit({ tenantId, debitId: 'refund-pay_5', amountMicro: 400n })).toEqual({
        status: 'HYDRATE',
      });
      expect((await store().snapshot(tenantId)).present).toBe(false);
      expect(
        await store().hydrate({
          tenantId,
          creditedMicro: 600n,
          committedMicro: 0n,
          grants: [
            { grantId: 'pay_5', amountMicro: 1_000n },
            { grantId: 'refund-pay_5', amountMicro: 400n },
          ],
        }),
      ).toEqual({ status: 'HYDRATED' });
      expect(await store().debit({ tenantId, debitId: 'refund-pay_5', amountMicro: 400n })).toEqual({
        status: 'ALREADY_APPLIED',
        creditedMicro: 600n,
        availableMicro: 600n,
      });
    });

    it("a rebase listing the debit among the book's applied ids keeps it applied", async () => {
      const tenantId = await fundedTenant(1_000n);
      expect(
        await store().rebase({
          tenantId,
          expected: { creditedMicro: 1_000n, committedMicro: 0n, outboxMicro: 0n },
          book: {
            creditedMicro: 600n,
            spentMicro: 0n,
            grants: [
              { grantId: 'grant_initial', amountMicro: 1_000n },
              { grantId: 'refund-pay_6', amountMicro: 400n },
            ],
          },
        }),
      ).toMatchObject({ status: 'REBASED', creditedMicro: 600n });
      expect(await store().debit({ tenantId, debitId: 'refund-pay_6', amountMicro: 400n })).toMatchObject({
        status: 'ALREADY_APPLIED',
        creditedMicro: 600n,
      });
    });

    it.each([
      [{ amountMicro: 0n }, 'amountMicro'],
      [{ amountMicro: -1n }, 'amountMicro'],
      [{ amountMicro: 10n ** 15n + 1n }, 'amountMicro'],
      [{ debitId: '' }, 'debitId'],
      [{ debitId: 'a:b' }, 'debitId'],
      [{ debitId: 'x'.repeat(65) }, 'debitId'],
      [{ tenantId: 'a}b' }, 'tenantId'],
    ])('refuses %o (INVALID_INPUT %s) and writes nothing', async (override, field) => {
      const tenantId = await fundedTenant(1_000n);
      const input = { tenantId, debitId: 'refund-pay_7', amountMicro: 10n, ...override };
      expect(await store().debit(input)).toEqual({ status: 'INVALID_INPUT', field });
      expect((await store().snapshot(tenantId)).creditedMicro).toBe(1_000n);
    });

    it.each([
      [['refund-pay_8', '1e3'], 'amountMicro'],
      [['refund-pay_8', '0100'], 'amountMicro'],
      [['refund-pay_8', '100.0'], 'amountMicro'],
      [['refund-pay_8', '-100'], 'amountMicro'],
      [['refund-pay_8'], 'amountMicro'],
      [['refund pay', '100'], 'debitId'],
    ] as const)('the script refuses %j (INVALID_INPUT %s) and writes nothing', async (args, field) => {
      const tenantId = await fundedTenant(1_000n);
      expect(await engine.runner.run('debit', [tenantKey(tenantId)], [...args])).toEqual([
        'INVALID_INPUT',
        field,
      ]);
      expect((await store().snapshot(tenantId)).creditedMicro).toBe(1_000n);
    });
  });

  describe('an absent balance (an emptied store): admit v3, credit v2, hydrate v1', () => {
    // What snapshot answers for a tenant the store holds no balance for.
    const absent = {
      creditedMicro: 0n,
      committedMicro: 0n,
      reservedMicro: 0n,
      availableMicro: 0n,
      outboxMicro: 0n,
      present: false,
    };

    it('admit answers HYDRATE and writes nothing, paid or free; after hydrate it admits against the figures written', async () => {
      const tenantId = uniqueTenant();
      for (const costMicro of [100n, 0n]) {
        expect(await store().admit(admitInput(tenantId, { costMicro }))).toEqual({ status: 'HYDRATE' });
      }
      // Nothing was written: the balance is still absent, so hydrate writes it.
      expect(
        await store().hydrate({ tenantId, creditedMicro: 1_000n, committedMicro: 300n, grants: [] }),
      ).toEqual({ status: 'HYDRATED' });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 300n,
        reservedMicro: 0n,
        availableMicro: 700n,
        outboxMicro: 0n,
        present: true,
      });
      const result = await admitted(admitInput(tenantId, { costMicro: 700n }));
      expect(result.remaining.balanceMicro).toBe(0n);
      expect(await store().admit(admitInput(tenantId, { costMicro: 1n }))).toMatchObject({
        status: 'BUDGET_EXCEEDED',
        scope: 'balance',
      });
    });

    it('a tenant whose book is empty is hydrated to 0 and refused a paid request, not let through', async () => {
      const tenantId = uniqueTenant();
      expect(await store().hydrate({ tenantId, creditedMicro: 0n, committedMicro: 0n, grants: [] })).toEqual({
        status: 'HYDRATED',
      });
      expect(await store().admit(admitInput(tenantId, { costMicro: 1n }))).toEqual({
        status: 'BUDGET_EXCEEDED',
        scope: 'balance',
        remainingMicro: 0n,
        limitMicro: 0n,
      });
      expect((await store().admit(admitInput(tenantId, { costMicro: 0n }))).status).toBe('ADMITTED');
    });

    it('credit answers HYDRATE and writes nothing: a grant never becomes the whole balance', async () => {
      const tenantId = uniqueTenant();
      expect(await store().credit({ tenantId, grantId: 'g1', amountMicro: 500n })).toEqual({
        status: 'HYDRATE',
      });
      expect(await store().snapshot(tenantId)).toEqual(absent);
      expect(
        await store().hydrate({
          tenantId,
          creditedMicro: 2_500n,
          committedMicro: 0n,
          grants: [
            { grantId: 'g1', amountMicro: 500n },
            { grantId: 'g2', amountMicro: 2_000n },
          ],
        }),
      ).toEqual({ status: 'HYDRATED' });
      // The grants the book counted are applied once; another amount under their id is refused.
      expect(await store().credit({ tenantId, grantId: 'g1', amountMicro: 500n })).toEqual({
        status: 'ALREADY_APPLIED',
        creditedMicro: 2_500n,
        availableMicro: 2_500n,
      });
      expect(await store().credit({ tenantId, grantId: 'g2', amountMicro: 7n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'grantId',
      });
      expect(await store().credit({ tenantId, grantId: 'g3', amountMicro: 1_000n })).toEqual({
        status: 'CREDITED',
        creditedMicro: 3_500n,
        availableMicro: 3_500n,
      });
    });

    it('hydrate writes only while the balance is absent: a second call answers ALREADY_PRESENT and changes nothing', async () => {
      const tenantId = uniqueTenant();
      const first = { tenantId, creditedMicro: 900n, committedMicro: 100n, grants: [] };
      const [a, b] = await Promise.all([
        store().hydrate(first),
        store().hydrate({
          ...first,
          creditedMicro: 5_000n,
          grants: [{ grantId: 'other', amountMicro: 5_000n }],
        }),
      ]);
      expect([a.status, b.status]).toEqual(['HYDRATED', 'ALREADY_PRESENT']);
      await admitted(admitInput(tenantId, { costMicro: 50n }));
      expect(await store().hydrate(first)).toEqual({ status: 'ALREADY_PRESENT' });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 900n,
        committedMicro: 100n,
        reservedMicro: 50n,
        availableMicro: 750n,
        outboxMicro: 0n,
        present: true,
      });
      // The second call's grant was not recorded.
      expect((await store().credit({ tenantId, grantId: 'other', amountMicro: 1n })).status).toBe('CREDITED');
    });

    it('hydrate rebuilds the month cap counters where absent and leaves a surviving one as it is', async () => {
      const tenantId = uniqueTenant();
      const keyB = 'key_b';
      // key_b's month counter survived (an open reservation of 300 on it).
      await engine.setHashRaw(`${tenantKey(tenantId)}:km:${keyB}:202611`, 'reserved', '300');
      expect(
        await store().hydrate({
          tenantId,
          creditedMicro: 10_000n,
          committedMicro: 2_000n,
          grants: [],
          month: {
            nowMs: NOW,
            tenantCommittedMicro: 900n,
            keys: [
              { keyId: 'key_a', committedMicro: 600n },
              { keyId: keyB, committedMicro: 300n },
            ],
          },
        }),
      ).toEqual({ status: 'HYDRATED' });
      const limits = { ...NO_LIMITS, tenantMonthlyCapMicro: 1_000n, keyMonthlyCapMicro: 700n };
      expect(await store().admit(admitInput(tenantId, { costMicro: 101n, limits }))).toEqual({
        status: 'BUDGET_EXCEEDED',
        scope: 'tenant_monthly',
        remainingMicro: 100n,
        limitMicro: 1_000n,
      });
      expect(
        await store().admit(
          admitInput(tenantId, { costMicro: 101n, limits: { ...limits, tenantMonthlyCapMicro: null } }),
        ),
      ).toEqual({ status: 'BUDGET_EXCEEDED', scope: 'key_monthly', remainingMicro: 100n, limitMicro: 700n });
      // key_b: only the surviving reservation counts (its counter was not overwritten).
      const onB = await admitted(
        admitInput(tenantId, {
          keyId: keyB,
          costMicro: 100n,
          limits: { ...limits, tenantMonthlyCapMicro: null },
        }),
      );
      expect(onB.remaining.keyMonthlyMicro).toBe(300n);
    });

    it.each([
      [{ creditedMicro: -1n }, 'creditedMicro'],
      [{ creditedMicro: 2n ** 52n }, 'creditedMicro'],
      [{ committedMicro: -1n }, 'committedMicro'],
      [{ grants: [{ grantId: 'a:b', amountMicro: 1n }] }, 'grantId'],
      [{ grants: [{ grantId: 'g', amountMicro: 0n }] }, 'amountMicro'],
    ])('hydrate refuses %o (INVALID_INPUT %s) and writes nothing', async (override, field) => {
      const tenantId = uniqueTenant();
      const input = { tenantId, creditedMicro: 10n, committedMicro: 0n, grants: [], ...override };
      expect(await store().hydrate(input)).toEqual({ status: 'INVALID_INPUT', field });
      expect(await store().admit(admitInput(tenantId))).toEqual({ status: 'HYDRATE' });
    });
  });

  describe('snapshot v2 and rebase v1 (the conservation check and its repair)', () => {
    const bal = (tenantId: string) => `${tenantKey(tenantId)}:bal`;

    it('snapshot reports the outbox (0 when the field is absent) and whether the balance exists', async () => {
      const tenantId = await fundedTenant(1_000n);
      expect(await store().snapshot(tenantId)).toMatchObject({ outboxMicro: 0n, present: true });
      await engine.setHashRaw(bal(tenantId), 'committed', '300');
      await engine.setHashRaw(bal(tenantId), 'outbox', '120');
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_000n,
        committedMicro: 300n,
        reservedMicro: 0n,
        availableMicro: 700n,
        outboxMicro: 120n,
        present: true,
      });
      expect((await store().snapshot(uniqueTenant())).present).toBe(false);
    });

    it("rebase sets credited and committed to the book's (committed = spent + outbox), keeps reserved and outbox, and makes the book's grants the applied ones", async () => {
      const tenantId = await fundedTenant(1_000n);
      await admitted(admitInput(tenantId, { costMicro: 100n }));
      await engine.setHashRaw(bal(tenantId), 'committed', '50');
      await engine.setHashRaw(bal(tenantId), 'outbox', '20');
      const result = await store().rebase({
        tenantId,
        expected: { creditedMicro: 1_000n, committedMicro: 50n, outboxMicro: 20n },
        book: {
          creditedMicro: 1_500n,
          spentMicro: 400n,
          grants: [
            { grantId: 'book_a', amountMicro: 1_000n },
            { grantId: 'book_b', amountMicro: 500n },
          ],
        },
      });
      expect(result).toEqual({
        status: 'REBASED',
        creditedMicro: 1_500n,
        committedMicro: 420n,
        reservedMicro: 100n,
        outboxMicro: 20n,
      });
      expect(await store().snapshot(tenantId)).toEqual({
        creditedMicro: 1_500n,
        committedMicro: 420n,
        reservedMicro: 100n,
        availableMicro: 980n,
        outboxMicro: 20n,
        present: true,
      });
      // A credit still on its way for a grant the book holds is applied once, by the rebase.
      expect(await store().credit({ tenantId, grantId: 'book_b', amountMicro: 500n })).toMatchObject({
        status: 'ALREADY_APPLIED',
        creditedMicro: 1_500n,
      });
      // The store's own record of a grant the book does not hold went with its amount.
      expect(await store().credit({ tenantId, grantId: 'grant_initial', amountMicro: 1_000n })).toMatchObject(
        { status: 'CREDITED', creditedMicro: 2_500n },
      );
    });

    it.each([
      ['credited', { creditedMicro: 999n, committedMicro: 0n, outboxMicro: 0n }],
      ['committed', { creditedMicro: 1_000n, committedMicro: 1n, outboxMicro: 0n }],
      ['outbox', { creditedMicro: 1_000n, committedMicro: 0n, outboxMicro: 5n }],
    ])('rebase answers CHANGED and writes nothing when %s is not what was read', async (_, expected) => {
      const tenantId = await fundedTenant(1_000n);
      const before = await store().snapshot(tenantId);
      expect(
        await store().rebase({
          tenantId,
          expected,
          book: {
            creditedMicro: 5_000n,
            spentMicro: 10n,
            grants: [{ grantId: 'other', amountMicro: 5_000n }],
          },
        }),
      ).toEqual({ status: 'CHANGED', creditedMicro: 1_000n, committedMicro: 0n, outboxMicro: 0n });
      expect(await store().snapshot(tenantId)).toEqual(before);
      // The applied grants are untouched too.
      expect((await store().credit({ tenantId, grantId: 'grant_initial', amountMicro: 1_000n })).status).toBe(
        'ALREADY_APPLIED',
      );
    });

    it('rebase answers ABSENT and creates nothing when the balance is absent', async () => {
      const tenantId = uniqueTenant();
      expect(
        await store().rebase({
          tenantId,
          expected: { creditedMicro: 0n, committedMicro: 0n, outboxMicro: 0n },
          book: { creditedMicro: 10n, spentMicro: 0n, grants: [] },
        }),
      ).toEqual({ status: 'ABSENT' });
      expect((await store().snapshot(tenantId)).present).toBe(false);
      expect(await store().admit(admitInput(tenantId))).toEqual({ status: 'HYDRATE' });
    });

    it('rebase compares a negative figure as read (a corrupted balance is repaired too)', async () => {
      const tenantId = await fundedTenant(1_000n);
      await engine.setHashRaw(bal(tenantId), 'committed', '-40');
      expect(
        await store().rebase({
          tenantId,
          expected: { creditedMicro: 1_000n, committedMicro: -40n, outboxMicro: 0n },
          book: {
            creditedMicro: 1_000n,
            spentMicro: 0n,
            grants: [{ grantId: 'grant_initial', amountMicro: 1_000n }],
          },
        }),
      ).toMatchObject({ status: 'REBASED', committedMicro: 0n });
    });

    it.each([
      [
        { expected: { creditedMicro: 2n ** 52n, committedMicro: 0n, outboxMicro: 0n } },
        'expectedCreditedMicro',
      ],
      [
        { expected: { creditedMicro: 0n, committedMicro: -(2n ** 52n), outboxMicro: 0n } },
        'expectedCommittedMicro',
      ],
      [{ book: { creditedMicro: -1n, spentMicro: 0n, grants: [] } }, 'creditedMicro'],
      [{ book: { creditedMicro: 0n, spentMicro: 2n ** 52n, grants: [] } }, 'spentMicro'],
      [
        { book: { creditedMicro: 1n, spentMicro: 0n, grants: [{ grantId: 'a:b', amountMicro: 1n }] } },
        'grantId',
      ],
      [
        { book: { creditedMicro: 1n, spentMicro: 0n, grants: [{ grantId: 'g', amountMicro: 0n }] } },
        'amountMicro',
      ],
    ])('rebase refuses %o (INVALID_INPUT %s) and writes nothing', async (override, field) => {
      const tenantId = await fundedTenant(1_000n);
      const before = await store().snapshot(tenantId);
      const input = {
        tenantId,
        expected: { creditedMicro: 1_000n, committedMicro: 0n, outboxMicro: 0n },
        book: { creditedMicro: 7n, spentMicro: 0n, grants: [] },
        ...override,
      };
      expect(await store().rebase(input)).toEqual({ status: 'INVALID_INPUT', field });
      expect(await store().snapshot(tenantId)).toEqual(before);
    });

    it('rebase refuses book figures that would take committed past the bound with the outbox', async () => {
      const tenantId = await fundedTenant(1_000n);
      await engine.setHashRaw(bal(tenantId), 'outbox', '10');
      const before = await store().snapshot(tenantId);
      expect(
        await store().rebase({
          tenantId,
          expected: { creditedMicro: 1_000n, committedMicro: 0n, outboxMicro: 10n },
          book: { creditedMicro: 1_000n, spentMicro: 2n ** 52n - 5n, grants: [] },
        }),
      ).toEqual({ status: 'INVALID_INPUT', field: 'spentMicro' });
      expect(await store().snapshot(tenantId)).toEqual(before);
    });
  });

  describe('pool_gate', () => {
    it('is a token bucket shared by everyone using the pool', async () => {
      const pool = `pool_${uniqueTenant()}`;
      const gate = (nowMs: number) =>
        store().poolGate({ pool, tokens: 1, capacity: 2, refillPerMinute: 60, nowMs });
      expect(await gate(NOW)).toEqual({ status: 'ALLOWED', remaining: 1 });
      expect(await gate(NOW)).toEqual({ status: 'ALLOWED', remaining: 0 });
      expect(await gate(NOW)).toEqual({
        status: 'RATE_LIMITED',
        dimension: 'pool',
        limit: 2,
        remaining: 0,
        retryAfterMs: 1_000,
        resetAtMs: NOW + 1_000,
      });
      expect(await gate(NOW + 1_000)).toEqual({ status: 'ALLOWED', remaining: 0 });
    });
  });

  describe('admission through a pool gate', () => {
    it('cancels the fresh reservation at once when the pool denies', async () => {
      const tenantId = await fundedTenant(1_000n);
      const pool = `pool_${uniqueTenant()}`;
      const gate = { capacity: 10, refillPerMinute: 0 };
      const first = await admitWithPoolGate(store(), admitInput(tenantId, { pool, tokenEstimate: 10 }), gate);
      expect(first.status).toBe('ADMITTED');
      const second = await admitWithPoolGate(
        store(),
        admitInput(tenantId, { pool, tokenEstimate: 10 }),
        gate,
      );
      expect(second).toMatchObject({ status: 'RATE_LIMITED', dimension: 'pool', limit: 10, remaining: 0 });
      // Only the first reservation holds budget; the denied one was released.
      expect(await store().snapshot(tenantId)).toMatchObject({ reservedMicro: 100n, availableMicro: 900n });
    });

    it('without a gate for the pool, admission is the single admit call', async () => {
      const tenantId = await fundedTenant(1_000n);
      const result = await admitWithPoolGate(store(), admitInput(tenantId, { tokenEstimate: 10 }), undefined);
      expect(result.status).toBe('ADMITTED');
    });
  });

  describe('leases and fencing', () => {
    it('issues growing tokens; the holder renews its lease and keeps its token; anyone else is HELD', async () => {
      const resource = `job_${uniqueTenant()}`;
      const lease = await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 });
      expect(lease).toEqual({ status: 'ACQUIRED', fencingToken: 1 });
      expect(await store().acquireLease({ resource, holder: 'worker-b', ttlMs: 10_000 })).toMatchObject({
        status: 'HELD',
        holder: 'worker-a',
      });
      expect(await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 })).toEqual({
        status: 'RENEWED',
        fencingToken: 1,
      });
      expect(await store().releaseLease({ resource, holder: 'worker-b' })).toBe(false);
      expect(await store().releaseLease({ resource, holder: 'worker-a' })).toBe(true);
      expect(await store().acquireLease({ resource, holder: 'worker-b', ttlMs: 10_000 })).toEqual({
        status: 'ACQUIRED',
        fencingToken: 2,
      });
    });

    it('a renewal restarts the TTL: the lease outlives its first TTL while its holder renews it', async () => {
      const resource = `job_${uniqueTenant()}`;
      expect(await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 300 })).toMatchObject({
        status: 'ACQUIRED',
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 300 })).toEqual({
        status: 'RENEWED',
        fencingToken: 1,
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      // 400 ms after the first acquisition, past its 300 ms: alive only through the renewal.
      expect(await store().acquireLease({ resource, holder: 'worker-b', ttlMs: 300 })).toMatchObject({
        status: 'HELD',
        holder: 'worker-a',
      });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
        status: 'OK',
      });
    });

    it("CAS accepts the live holder's token for every write, and never an older one again", async () => {
      const resource = `job_${uniqueTenant()}`;
      await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 });
      for (let write = 0; write < 3; write += 1) {
        expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
          status: 'OK',
        });
      }
      expect(await store().fencingCas({ resource, fencingToken: 0, holder: 'worker-a' })).toEqual({
        status: 'STALE',
        lastAccepted: 1,
      });
      await store().releaseLease({ resource, holder: 'worker-a' });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
        status: 'STALE',
        lastAccepted: 1,
      });
      expect(await store().acquireLease({ resource, holder: 'worker-b', ttlMs: 10_000 })).toEqual({
        status: 'ACQUIRED',
        fencingToken: 2,
      });
      expect(await store().fencingCas({ resource, fencingToken: 2, holder: 'worker-b' })).toEqual({
        status: 'OK',
      });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
        status: 'STALE',
        lastAccepted: 2,
      });
    });

    it('a holder whose lease expired and was taken over cannot write, nor renew', async () => {
      const resource = `job_${uniqueTenant()}`;
      const a = await store().acquireLease({ resource, holder: 'paused-a', ttlMs: 100 });
      await new Promise((resolve) => setTimeout(resolve, 150));
      const b = await store().acquireLease({ resource, holder: 'worker-b', ttlMs: 10_000 });
      if (a.status !== 'ACQUIRED' || b.status !== 'ACQUIRED') throw new Error('leases not acquired');
      expect(b.fencingToken).toBeGreaterThan(a.fencingToken);
      // The paused holder's write comes first: the token issued last decides, not the order.
      expect(
        await store().fencingCas({ resource, fencingToken: a.fencingToken, holder: 'paused-a' }),
      ).toMatchObject({
        status: 'STALE',
      });
      expect(
        await store().fencingCas({ resource, fencingToken: b.fencingToken, holder: 'worker-b' }),
      ).toEqual({ status: 'OK' });
      expect(
        await store().fencingCas({ resource, fencingToken: a.fencingToken, holder: 'paused-a' }),
      ).toMatchObject({
        status: 'STALE',
      });
      expect(await store().acquireLease({ resource, holder: 'paused-a', ttlMs: 10_000 })).toMatchObject({
        status: 'HELD',
        holder: 'worker-b',
      });
    });

    it('after the lease keys are lost, a paused holder of a token issued again to another is refused', async () => {
      const resource = `job_${uniqueTenant()}`;
      expect(await store().acquireLease({ resource, holder: 'before-loss', ttlMs: 10_000 })).toEqual({
        status: 'ACQUIRED',
        fencingToken: 1,
      });
      // Redis lost its data: the token counter starts again, and another holder gets token 1.
      for (const key of ['lease', 'token', 'fence']) await engine.deleteRaw(`{l:${resource}}:${key}`);
      expect(await store().acquireLease({ resource, holder: 'after-loss', ttlMs: 10_000 })).toEqual({
        status: 'ACQUIRED',
        fencingToken: 1,
      });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'before-loss' })).toMatchObject({
        status: 'STALE',
      });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'after-loss' })).toEqual({
        status: 'OK',
      });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'bad holder' })).toEqual({
        status: 'INVALID_INPUT',
        field: 'holder',
      });
    });

    it('a holder whose lease expired with nobody taking over gets a new token, and its old one is refused', async () => {
      const resource = `job_${uniqueTenant()}`;
      const first = await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 100 });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
        status: 'OK',
      });
      await new Promise((resolve) => setTimeout(resolve, 150));
      const again = await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 });
      expect(first).toEqual({ status: 'ACQUIRED', fencingToken: 1 });
      expect(again).toEqual({ status: 'ACQUIRED', fencingToken: 2 });
      expect(await store().fencingCas({ resource, fencingToken: 1, holder: 'worker-a' })).toEqual({
        status: 'STALE',
        lastAccepted: 1,
      });
      expect(await store().fencingCas({ resource, fencingToken: 2, holder: 'worker-a' })).toEqual({
        status: 'OK',
      });
    });

    it.each(['abc', '-1', '9007199254740993', '1.5'])(
      'fails closed (CORRUPT) on a stored %j',
      async (stored) => {
        const resource = `job_${uniqueTenant()}`;
        await engine.setRaw(`{l:${resource}}:fence`, stored);
        expect(await store().fencingCas({ resource, fencingToken: 5, holder: 'worker-a' })).toEqual({
          status: 'CORRUPT',
        });
      },
    );

    it('refuses to issue a token past 2^53 - 1, and still renews the last one', async () => {
      const resource = `job_${uniqueTenant()}`;
      await engine.setRaw(`{l:${resource}}:token`, String(Number.MAX_SAFE_INTEGER));
      await expect(
        store().acquireLease({ resource, holder: 'worker-a', ttlMs: 1_000 }),
      ).rejects.toBeInstanceOf(FencingOverflow);
      await engine.setRaw(`{l:${resource}}:token`, String(Number.MAX_SAFE_INTEGER - 1));
      expect(await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 1_000 })).toEqual({
        status: 'ACQUIRED',
        fencingToken: Number.MAX_SAFE_INTEGER,
      });
      expect(await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 1_000 })).toEqual({
        status: 'RENEWED',
        fencingToken: Number.MAX_SAFE_INTEGER,
      });
    });

    it.each(['abc', '-1', '9007199254740993'])(
      'fails closed (OVERFLOW) on a stored token %j, renewal included',
      async (stored) => {
        const resource = `job_${uniqueTenant()}`;
        expect((await store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 })).status).toBe(
          'ACQUIRED',
        );
        await engine.setRaw(`{l:${resource}}:token`, stored);
        await expect(
          store().acquireLease({ resource, holder: 'worker-a', ttlMs: 10_000 }),
        ).rejects.toBeInstanceOf(FencingOverflow);
      },
    );
  });

  describe('tenant index', () => {
    // Every file shares the one index key on the shared Redis only through its own key prefix, so
    // these tests see the tenants they mark (plus those of other tests in this file).
    async function pageAll(limit: number): Promise<{ tenants: string[]; pages: number }> {
      const tenants: string[] = [];
      let after: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await store().listTenants({ limit, ...(after === undefined ? {} : { after }) });
        if (page.status !== 'PAGE') throw new Error(page.status);
        pages += 1;
        tenants.push(...page.tenants.map((tenant) => tenant.tenantId));
        if (page.next === null) return { tenants, pages };
        after = page.next;
      }
    }

    it('marks a tenant with its last active time, which never moves back (GT)', async () => {
      const tenantId = uniqueTenant();
      expect(await store().markTenant({ tenantId, nowMs: NOW })).toEqual({
        status: 'MARKED',
        lastActiveMs: NOW,
      });
      expect(await store().markTenant({ tenantId, nowMs: NOW - 5_000 })).toEqual({
        status: 'MARKED',
        lastActiveMs: NOW,
      });
      expect(await store().markTenant({ tenantId, nowMs: NOW + 60_000 })).toEqual({
        status: 'MARKED',
        lastActiveMs: NOW + 60_000,
      });
      const page = await store().listTenants({ limit: 1000 });
      if (page.status !== 'PAGE') throw new Error(page.status);
      expect(page.tenants.filter((tenant) => tenant.tenantId === tenantId)).toEqual([
        { tenantId, lastActiveMs: NOW + 60_000 },
      ]);
    });

    it('lists every tenant once, in byte order, page by page, with a cursor that ends', async () => {
      const marked = Array.from({ length: 7 }, () => uniqueTenant());
      for (const [i, tenantId] of marked.entries()) await store().markTenant({ tenantId, nowMs: NOW + i });
      const { tenants, pages } = await pageAll(3);
      expect(tenants).toEqual([...tenants].sort());
      expect(new Set(tenants).size).toBe(tenants.length);
      expect(tenants).toEqual(expect.arrayContaining(marked));
      expect(pages).toBe(Math.floor(tenants.length / 3) + 1);
    });

    it('a scan misses no tenant that stays in the index while others are pruned and re-marked', async () => {
      const marked = Array.from({ length: 9 }, () => uniqueTenant()).sort();
      for (const tenantId of marked) await store().markTenant({ tenantId, nowMs: NOW });
      const seen: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store().listTenants({ limit: 2, ...(after === undefined ? {} : { after }) });
        if (page.status !== 'PAGE') throw new Error(page.status);
        seen.push(...page.tenants.map((tenant) => tenant.tenantId));
        // Between pages: a tenant already listed is pruned and one ahead is marked again (a later
        // time), as the reaper and live requests would do.
        const listed = seen.filter((tenantId) => marked.includes(tenantId));
        const done = listed.at(0);
        if (done !== undefined) await store().pruneTenant({ tenantId: done, cutoffMs: NOW });
        const ahead = marked.find((tenantId) => !seen.includes(tenantId));
        if (ahead !== undefined) await store().markTenant({ tenantId: ahead, nowMs: NOW + 1_000 });
        if (page.next === null) break;
        after = page.next;
      }
      expect(seen.filter((tenantId) => marked.includes(tenantId))).toEqual(marked);
    });

    it('prunes a tenant last marked at or before the cutoff; a mark after the cutoff wins', async () => {
      const idle = uniqueTenant();
      const active = uniqueTenant();
      await store().markTenant({ tenantId: idle, nowMs: NOW });
      await store().markTenant({ tenantId: active, nowMs: NOW });
      // The reaper judged both idle at cutoff NOW; a request marks `active` before the prune lands.
      await store().markTenant({ tenantId: active, nowMs: NOW + 1 });
      expect(await store().pruneTenant({ tenantId: idle, cutoffMs: NOW })).toEqual({ status: 'PRUNED' });
      expect(await store().pruneTenant({ tenantId: active, cutoffMs: NOW })).toEqual({
        status: 'KEPT',
        lastActiveMs: NOW + 1,
      });
      expect(await store().pruneTenant({ tenantId: idle, cutoffMs: NOW })).toEqual({ status: 'ABSENT' });
      const { tenants } = await pageAll(1000);
      expect(tenants).toContain(active);
      expect(tenants).not.toContain(idle);
      // A pruned tenant marked again is back, with its new time.
      expect(await store().markTenant({ tenantId: idle, nowMs: NOW + 2 })).toEqual({
        status: 'MARKED',
        lastActiveMs: NOW + 2,
      });
      expect((await pageAll(1000)).tenants).toContain(idle);
    });

    it.each([
      ['markTenant', 'tenantId', () => store().markTenant({ tenantId: 'a:b', nowMs: NOW })],
      ['markTenant', 'nowMs', () => store().markTenant({ tenantId: 'ten_ok', nowMs: 0 })],
      ['markTenant', 'nowMs', () => store().markTenant({ tenantId: 'ten_ok', nowMs: 2 ** 47 + 1 })],
      ['listTenants', 'limit', () => store().listTenants({ limit: 0 })],
      ['listTenants', 'limit', () => store().listTenants({ limit: 1001 })],
      ['listTenants', 'after', () => store().listTenants({ limit: 10, after: '{x}' })],
      ['pruneTenant', 'cutoffMs', () => store().pruneTenant({ tenantId: 'ten_ok', cutoffMs: -1 })],
    ] as const)('%s refuses bad input (%s)', async (_name, field, call) => {
      expect(await call()).toEqual({ status: 'INVALID_INPUT', field });
    });

    it.each([
      ['tenant_index_mark', ['ten:ok', '5']],
      ['tenant_index_mark', ['ten_ok', '1e3']],
      ['tenant_index_mark', ['ten_ok', '01']],
      ['tenant_index_page', ['', '-1']],
      ['tenant_index_page', ['', '10.0']],
      ['tenant_index_prune', ['ten_ok', '-0']],
      ['tenant_index_prune', ['ten-ok*', '5']],
    ] as const)('the script %s refuses %j', async (script, args) => {
      const reply = await engine.runner.run(script, ['{i:tenants}'], [...args]);
      expect(reply[0]).toBe('INVALID_INPUT');
    });
  });
});

function bigints(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
