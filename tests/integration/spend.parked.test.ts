import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spend } from '../../db/schema/index.js';
import { newId } from '../../src/ids.js';
import { silentLogger } from '../../src/observability/logger.js';
import { memoryStore } from '../../src/store/index.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * An unsettled spend row the store refuses to settle (INVALID_INPUT: here, a reservation id that
 * was cancelled before any admit, a tombstone — unlike an id the store lost with its data, which
 * is recovered) is parked with its reason and counted, not retried on every run of the job.
 */
let harness: Harness;
let finalizeCalls = 0;

beforeAll(async () => {
  const base = memoryStore({ log: silentLogger() });
  harness = await createHarness({
    store: {
      ...base,
      finalize: (input) => {
        finalizeCalls += 1;
        return base.finalize(input);
      },
    },
  });
});
afterAll(() => harness.close());

describe('an unsettled spend row the store refuses', () => {
  it('is parked with its reason and counted in spicegate_spend_parked_total, and not retried', async () => {
    const reservationId = newId('res');
    const tenantId = newId('ten');
    await harness.services.store.cancel({ tenantId, reservationId, nowMs: Date.now() });
    await harness.services.spend.unsettled({
      reservationId,
      tenantId,
      keyId: newId('key'),
      pool: 'standard',
      promptTokens: 3,
      completionTokens: 4,
      costMicro: 7n,
      free: false,
    });

    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect(finalizeCalls).toBe(1);
    const [row] = await harness.db.select().from(spend).where(eq(spend.reservationId, reservationId));
    expect(row).toMatchObject({ settled: false, parkedReason: 'store refused reservationId' });
    expect(harness.logs.filter((line) => line.msg === 'unsettled spend row parked')).toEqual([
      expect.objectContaining({ level: 'error', reservationId, reason: 'store refused reservationId' }),
    ]);
    const metrics = await (await harness.request('/metrics')).text();
    expect(metrics).toMatch(/^spicegate_spend_parked_total 1$/m);

    // The next runs leave it alone: no store call, no second count.
    expect(await harness.services.spend.settleUnsettled()).toBe(0);
    expect(finalizeCalls).toBe(1);
    expect(await (await harness.request('/metrics')).text()).toMatch(/^spicegate_spend_parked_total 1$/m);
  });
});
