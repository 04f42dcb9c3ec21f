import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admitWithPoolGate } from '../../src/budget/admission.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { tenantKey } from '../../src/store/typed-store.js';
import {
  admitInput,
  type EngineUnderTest,
  makeEngine,
  NO_LIMITS,
  NOW,
  newTenant,
  spendUsage,
  uniqueTenant,
} from '../support/engines.js';

/** Edges found in review, on both engines: argument parsing, retries, idempotency, fencing. */
describe.each(['redis', 'memory'] as const)('%s engine edges', (engineName) => {
  let engine: EngineUnderTest;
  beforeAll(() => {
    engine = makeEngine(engineName);
  });
  afterAll(() => engine.close());

  async function funded(amountMicro = 10_000n): Promise<string> {
    const tenantId = await newTenant(engine.store);
    await engine.store.credit({ tenantId, grantId: 'g', amountMicro });
    return tenantId;
  }

  const rawAdmit = (tenantId: string, overrides: Record<number, string>) => {
    const args = [tenantId, 'key_a', '', '', 'standard', '', `res_raw${Math.random().toString(36).slice(2)}`];
    args.push('100', '10', String(NOW), '300000', '202611', ...Array(9).fill('-1'));
    for (const [index, value] of Object.entries(overrides)) args[Number(index)] = value;
    return engine.runner.run('admit', [tenantKey(tenantId)], args);
  };

  describe('raw arguments the TypeScript layer never sends', () => {
    it.each([
      [1, 'a}b', 'keyId'],
      [1, 'x:y', 'keyId'],
      [2, 'u*', 'userId'],
      [3, '{t:other}', 'channelId'],
      [4, 'p:1', 'pool'],
      [5, 'i}', 'idempotencyKey'],
      [6, 'r:1', 'reservationId'],
      [7, '-0', 'costMicro'],
      [7, '007', 'costMicro'],
      [7, '+5', 'costMicro'],
      [8, '-0', 'tokenEstimate'],
      [9, '0x10', 'nowMs'],
      [9, String(2 ** 48), 'nowMs'],
      [12, '1000000001', 'tenantRpm'],
    ])('admit argument %i = %j is INVALID_INPUT %s and writes nothing', async (index, value, field) => {
      const tenantId = await funded();
      const before = await engine.store.snapshot(tenantId);
      expect(await rawAdmit(tenantId, { [index]: value })).toEqual(['INVALID_INPUT', field]);
      expect(await engine.store.snapshot(tenantId)).toEqual(before);
      // No window moved either: a limit of 1 still admits exactly one request.
      const limits = { ...NO_LIMITS, tenantRpm: 1, keyRpm: 1 };
      expect((await engine.store.admit(admitInput(tenantId, { limits }))).status).toBe('ADMITTED');
    });

    it('a finalize with actual cost "-0" is refused before anything is released', async () => {
      const tenantId = await funded(1_000n);
      const admitted = await engine.store.admit(admitInput(tenantId, { costMicro: 100n }));
      if (admitted.status !== 'ADMITTED') throw new Error(admitted.status);
      const finalize = (cost: string) =>
        engine.runner.run(
          'budget_finalize',
          [tenantKey(tenantId)],
          [admitted.reservationId, cost, '5', String(NOW), 'key_a', '0', '5', '0'],
        );
      expect(await finalize('-0')).toEqual(['INVALID_INPUT', 'actualCostMicro']);
      expect(await engine.store.snapshot(tenantId)).toMatchObject({ reservedMicro: 100n });
      expect(await finalize('50')).toEqual(['FINALIZED', 50, 50, 0, expect.stringMatching(/^\d+-\d+$/)]);
    });
  });

  describe('retry times', () => {
    it('are exact when the previous window still counts', async () => {
      const tenantId = await funded();
      const limits = { ...NO_LIMITS, keyRpm: 3 };
      const windowStart = NOW; // minute-aligned
      // Two requests late in one window, one early in the next.
      for (const at of [windowStart + 50_000, windowStart + 55_000, windowStart + 62_000]) {
        expect((await engine.store.admit(admitInput(tenantId, { limits, nowMs: at }))).status).toBe(
          'ADMITTED',
        );
      }
      const denied = await engine.store.admit(admitInput(tenantId, { limits, nowMs: windowStart + 70_000 }));
      if (denied.status !== 'RATE_LIMITED') throw new Error(denied.status);
      const early = await engine.store.admit(admitInput(tenantId, { limits, nowMs: denied.resetAtMs - 1 }));
      expect(early.status).toBe('RATE_LIMITED');
      expect(
        (await engine.store.admit(admitInput(tenantId, { limits, nowMs: denied.resetAtMs }))).status,
      ).toBe('ADMITTED');
    });

    it('name the dimension that frees up last, so the request passes at resetAtMs', async () => {
      const tenantId = await funded();
      const limits = { ...NO_LIMITS, tenantRpm: 2, userRpm: 1 };
      await engine.store.admit(admitInput(tenantId, { userId: 'u1', limits }));
      await engine.store.admit(admitInput(tenantId, { userId: 'u2', limits }));
      const denied = await engine.store.admit(admitInput(tenantId, { userId: 'u1', limits }));
      if (denied.status !== 'RATE_LIMITED') throw new Error(denied.status);
      const early = await engine.store.admit(
        admitInput(tenantId, { userId: 'u1', limits, nowMs: denied.resetAtMs - 1 }),
      );
      expect(early.status).toBe('RATE_LIMITED');
      const onTime = await engine.store.admit(
        admitInput(tenantId, { userId: 'u1', limits, nowMs: denied.resetAtMs }),
      );
      expect(onTime.status).toBe('ADMITTED');
    });
  });

  describe('idempotency', () => {
    it('a retry with the same reservation id (after a timeout) finds the reservation', async () => {
      const tenantId = await funded();
      const input = admitInput(tenantId);
      expect((await engine.store.admit(input)).status).toBe('ADMITTED');
      expect(await engine.store.admit(input)).toMatchObject({
        status: 'ALREADY_RESERVED',
        reservationId: input.reservationId,
      });
      expect(await engine.store.admit({ ...input, costMicro: 999n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'reservationId',
      });
      expect((await engine.store.snapshot(tenantId)).reservedMicro).toBe(100n);
    });

    it('idempotency keys belong to one API key', async () => {
      const tenantId = await funded();
      const a = await engine.store.admit(admitInput(tenantId, { keyId: 'key_a', idempotencyKey: 'same' }));
      const b = await engine.store.admit(admitInput(tenantId, { keyId: 'key_b', idempotencyKey: 'same' }));
      expect([a.status, b.status]).toEqual(['ADMITTED', 'ADMITTED']);
    });

    it('a cancelled request may be retried with the same key (a pool denial cancels)', async () => {
      const tenantId = await funded();
      const pool = `pool_${uniqueTenant()}`;
      await engine.store.poolGate({ pool, tokens: 1, capacity: 1, refillPerMinute: 60, nowMs: NOW });
      const gate = { capacity: 1, refillPerMinute: 60 };
      const denied = await admitWithPoolGate(
        engine.store,
        admitInput(tenantId, { pool, idempotencyKey: 'req', tokenEstimate: 1 }),
        gate,
      );
      expect(denied).toMatchObject({ status: 'RATE_LIMITED', dimension: 'pool', retryAfterMs: 1_000 });
      const later = await admitWithPoolGate(
        engine.store,
        admitInput(tenantId, { pool, idempotencyKey: 'req', tokenEstimate: 1, nowMs: NOW + 1_000 }),
        gate,
      );
      expect(later.status).toBe('ADMITTED');
    });

    it('a grant id reused with another amount is refused', async () => {
      const tenantId = await newTenant(engine.store);
      await engine.store.credit({ tenantId, grantId: 'pay_9', amountMicro: 500n });
      expect(await engine.store.credit({ tenantId, grantId: 'pay_9', amountMicro: 501n })).toEqual({
        status: 'INVALID_INPUT',
        field: 'grantId',
      });
      expect((await engine.store.snapshot(tenantId)).creditedMicro).toBe(500n);
    });
  });

  describe('finalize against the reaper, in both orders', () => {
    it('reap first: the finalize is LATE_FINALIZE; finalize first: the reaper finds nothing', async () => {
      const tenantId = await funded(10_000n);
      const a = await engine.store.admit(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
      const b = await engine.store.admit(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
      if (a.status !== 'ADMITTED' || b.status !== 'ADMITTED') throw new Error('not admitted');
      const due = NOW + 1_000;
      expect(
        await engine.store.finalize({
          tenantId,
          reservationId: a.reservationId,
          actualCostMicro: 60n,
          spend: spendUsage(1),
          nowMs: due,
        }),
      ).toMatchObject({ status: 'FINALIZED', chargedMicro: 60n });
      expect(await engine.store.reap({ tenantId, nowMs: due })).toMatchObject({
        count: 1,
        releasedMicro: 100n,
      });
      expect(
        await engine.store.finalize({
          tenantId,
          reservationId: b.reservationId,
          actualCostMicro: 70n,
          spend: spendUsage(1),
          nowMs: due,
        }),
      ).toMatchObject({ status: 'LATE_FINALIZE', chargedMicro: 70n, driftMicro: 0n });
      expect(await engine.store.snapshot(tenantId)).toMatchObject({
        committedMicro: 130n,
        reservedMicro: 0n,
      });
    });
  });

  describe('fencing', () => {
    it('refuses a holder whose lease expired even when nobody took over', async () => {
      const resource = `job_${uniqueTenant()}`;
      const lease = await engine.store.acquireLease({ resource, holder: 'paused', ttlMs: 100 });
      if (lease.status !== 'ACQUIRED') throw new Error(lease.status);
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(
        await engine.store.fencingCas({ resource, fencingToken: lease.fencingToken, holder: 'paused' }),
      ).toMatchObject({
        status: 'STALE',
      });
    });

    it('refuses a token that was never issued, however large', async () => {
      const resource = `job_${uniqueTenant()}`;
      await engine.store.acquireLease({ resource, holder: 'worker', ttlMs: 10_000 });
      expect(
        await engine.store.fencingCas({ resource, fencingToken: 10 ** 15, holder: 'worker' }),
      ).toMatchObject({
        status: 'STALE',
      });
      expect(await engine.store.fencingCas({ resource, fencingToken: 1, holder: 'worker' })).toEqual({
        status: 'OK',
      });
    });

    it.each(['0x1p10', ' 500', '500.0', '1e3'])('refuses the lease ttl %j', async (ttl) => {
      const reply = await engine.runner.run('lease_acquire', [`{l:job_${uniqueTenant()}}`], ['worker', ttl]);
      expect(reply).toEqual(['INVALID_INPUT', 'ttlMs']);
    });
  });

  describe('overspend', () => {
    it('is a log line and a counter, not only a flag', async () => {
      const lines: string[] = [];
      const metrics = createMetrics();
      const watched = makeEngine(engineName, {
        log: createLogger({ level: 'warn', destination: { write: (line: string) => void lines.push(line) } }),
        metrics,
      });
      try {
        const tenantId = await newTenant(watched.store);
        await watched.store.credit({ tenantId, grantId: 'g', amountMicro: 100n });
        const first = await watched.store.admit(admitInput(tenantId, { costMicro: 100n, ttlMs: 1_000 }));
        if (first.status !== 'ADMITTED') throw new Error(first.status);
        await watched.store.reap({ tenantId, nowMs: NOW + 1_000 });
        await watched.store.admit(admitInput(tenantId, { costMicro: 100n, nowMs: NOW + 1_000 }));
        await watched.store.finalize({
          tenantId,
          reservationId: first.reservationId,
          actualCostMicro: 100n,
          spend: spendUsage(1),
          nowMs: NOW + 1_500,
        });
        expect(lines.map((line) => JSON.parse(line) as { msg: string; tenantId?: string })).toContainEqual(
          expect.objectContaining({ msg: 'OVERSPEND', tenantId }),
        );
        expect(await metrics.registry.getSingleMetricAsString('spicegate_overspend_events_total')).toContain(
          'spicegate_overspend_events_total 1',
        );
      } finally {
        await watched.close();
      }
    });
  });
});
