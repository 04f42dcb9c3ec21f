import { afterAll, describe, expect, inject, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { redisRunner } from '../../src/store/redis.js';
import { createStore, type Store } from '../../src/store/typed-store.js';
import { admitInput, filePrefix, NO_LIMITS, NOW, spendUsage, startBalance } from '../support/engines.js';
import { prng, raceFinalizeAgainstReaper } from '../support/reaper-race.js';
import { deleteKeysWithPrefix } from '../support/redis-cleanup.js';

const SEED = Number(process.env.CONCURRENCY_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CONNECTIONS = 10;
const TENANTS = 20;
const OPERATIONS = 1_000;
const CREDIT = 2_000n;

describe(`concurrent calls over ${CONNECTIONS} connections (seed ${SEED})`, () => {
  const log = createLogger({ level: 'silent' });
  const keyPrefix = filePrefix();
  const runners = Array.from({ length: CONNECTIONS }, () =>
    redisRunner({ url: inject('redisUrl'), log, keyPrefix }),
  );
  const stores: Store[] = runners.map((runner) => createStore(runner, { log }));
  afterAll(async () => {
    await Promise.all(runners.map((runner) => runner.close()));
    await deleteKeysWithPrefix(inject('redisUrl'), keyPrefix);
  });

  it('1,000 concurrent admits and finalizes never let committed + reserved pass credited, and commit exactly the charges reported', async () => {
    const random = prng(SEED);
    const pick = () => stores[Math.floor(random() * CONNECTIONS)] as Store;
    const tenants = Array.from({ length: TENANTS }, (_, i) => `conc${SEED}_${i}`);
    await Promise.all(tenants.map((tenantId) => startBalance(pick(), tenantId)));
    await Promise.all(
      tenants.map((tenantId) => pick().credit({ tenantId, grantId: 'g', amountMicro: CREDIT })),
    );

    const charged = new Map<string, bigint>(tenants.map((tenantId) => [tenantId, 0n]));
    const violations: string[] = [];
    let sampling = true;
    const sampler = (async () => {
      let samples = 0;
      while (sampling || samples === 0) {
        for (const tenantId of tenants) {
          const s = await pick().snapshot(tenantId);
          if (s.committedMicro + s.reservedMicro > s.creditedMicro || s.reservedMicro < 0n) {
            violations.push(`${tenantId}: ${s.committedMicro} + ${s.reservedMicro} > ${s.creditedMicro}`);
          }
        }
        samples += 1;
      }
      return samples;
    })();

    const operations = Array.from({ length: OPERATIONS }, () => {
      const tenantId = tenants[Math.floor(random() * TENANTS)] as string;
      const cost = BigInt(50 + Math.floor(random() * 250));
      const actual = BigInt(Math.floor(random() * 400));
      return async () => {
        const admitted = await pick().admit(admitInput(tenantId, { costMicro: cost, limits: NO_LIMITS }));
        if (admitted.status !== 'ADMITTED') return admitted.status;
        const settled = await pick().finalize({
          tenantId,
          reservationId: admitted.reservationId,
          actualCostMicro: actual,
          spend: spendUsage(1),
          nowMs: NOW,
        });
        if (settled.status !== 'FINALIZED') throw new Error(`unexpected ${settled.status}`);
        charged.set(tenantId, (charged.get(tenantId) ?? 0n) + settled.chargedMicro);
        return admitted.status;
      };
    });
    const statuses = await Promise.all(operations.map((operation) => operation()));
    sampling = false;
    const samples = await sampler;

    expect(violations).toEqual([]);
    expect(samples).toBeGreaterThan(0);
    // Tight budgets: some requests must have been refused, or the test proved nothing.
    expect(statuses.filter((status) => status === 'BUDGET_EXCEEDED').length).toBeGreaterThan(0);
    expect(statuses.filter((status) => status === 'ADMITTED').length).toBeGreaterThan(0);
    for (const tenantId of tenants) {
      const s = await pick().snapshot(tenantId);
      expect(s).toEqual({
        creditedMicro: CREDIT,
        committedMicro: charged.get(tenantId),
        reservedMicro: 0n,
        availableMicro: CREDIT - (charged.get(tenantId) as bigint),
        // Every charge came from a finalize and waits in the outbox (nothing drains here).
        outboxMicro: charged.get(tenantId),
        present: true,
      });
    }
  });

  it('finalize and the reaper racing over separate connections, past the deadline, release each of 200 reservations exactly once', async () => {
    const outcome = await raceFinalizeAgainstReaper(stores, {
      seed: SEED,
      tenantPrefix: `race${SEED}`,
      tenants: 50,
      reservations: 200,
    });
    // The race was run: finalize claimed some reservations first and the reaper others.
    expect(outcome.finalized).toBeGreaterThan(0);
    expect(outcome.reaped).toBeGreaterThan(0);
  });
});
