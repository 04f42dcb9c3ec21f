import { and, eq, sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { conservationChecks, spend } from '../../db/schema/index.js';
import { grantCredits } from '../../src/billing/credits.js';
import { conservationJob } from '../../src/jobs/conservation.js';
import { OUTBOX_DRAIN_GRACE_MS, outboxDrainJob } from '../../src/jobs/outbox-drain.js';
import { jobsState, leaseResource, runDueJobs } from '../../src/jobs/runner.js';
import { accountBalance, accounts } from '../../src/ledger/journal.js';
import { tenantKey } from '../../src/store/typed-store.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { admitInput, settleOne } from '../support/engines.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * The jobs that keep the book whole, run by the real runner under their leases: the outbox drain
 * (what a gateway settled and could not write before it died) and the conservation check, over
 * every tenant of the tenant index.
 */
describe('book-keeping jobs', () => {
  let harness: Harness;
  let raw: Redis;
  beforeAll(async () => {
    harness = await createHarness();
    raw = new Redis(inject('redisUrl'));
  });
  afterAll(async () => {
    raw.disconnect();
    await harness.close();
  });

  /** A tenant with credits, in the tenant index, with `charges` settled by "a gateway" that never wrote them. */
  async function tenantWithUnwrittenCharges(name: string, charges: bigint[]): Promise<string> {
    const { services } = harness;
    const tenantId = (await createTenant(services, { name, tier: 4 })).id;
    await grantCredits(services, { tenantId, amountMicro: 1_000_000n, reason: 'jobs', grantedBy: 'test' });
    await services.store.markTenant({ tenantId, nowMs: Date.now() });
    for (const actualCostMicro of charges) await settleOne(services.store, tenantId, { actualCostMicro });
    return tenantId;
  }

  /** A run of the drain once the settlements are past the grace left to their live gateway. */
  const later = () => Date.now() + OUTBOX_DRAIN_GRACE_MS + 1_000;

  const rows = (tenantId: string) =>
    harness.db
      .select()
      .from(spend)
      .where(and(eq(spend.tenantId, tenantId), eq(spend.settled, true)));

  it('the outbox drain writes every indexed tenant’s waiting settlements to the book, once', async () => {
    const first = await tenantWithUnwrittenCharges('Drained A', [120n, 80n]);
    const second = await tenantWithUnwrittenCharges('Drained B', [300n]);
    expect(await rows(first)).toHaveLength(0);
    // Young entries are their gateway's: a run now writes nothing.
    await runDueJobs(harness.services, [outboxDrainJob], Date.now(), jobsState('drainer-0'));
    expect(await rows(first)).toHaveLength(0);
    await harness.services.store.releaseLease({
      resource: leaseResource(outboxDrainJob),
      holder: 'drainer-0',
    });

    await runDueJobs(harness.services, [outboxDrainJob], later(), jobsState('drainer-1'));

    expect(await rows(first)).toHaveLength(2);
    expect(await rows(second)).toHaveLength(1);
    expect(await accountBalance(harness.db, accounts.spent(first))).toBe(200n);
    expect(await accountBalance(harness.db, accounts.spent(second))).toBe(300n);
    for (const tenantId of [first, second]) {
      expect((await harness.services.store.snapshot(tenantId)).outboxMicro).toBe(0n);
    }
    // Run again (another instance): nothing is added.
    await harness.services.store.releaseLease({
      resource: leaseResource(outboxDrainJob),
      holder: 'drainer-1',
    });
    await runDueJobs(harness.services, [outboxDrainJob], later(), jobsState('drainer-2'));
    expect(await accountBalance(harness.db, accounts.spent(first))).toBe(200n);
    await harness.services.store.releaseLease({
      resource: leaseResource(outboxDrainJob),
      holder: 'drainer-2',
    });
  });

  it('while another instance holds the drain lease, this one writes nothing', async () => {
    const tenantId = await tenantWithUnwrittenCharges('Held', [50n]);
    const held = await harness.services.store.acquireLease({
      resource: leaseResource(outboxDrainJob),
      holder: 'someone-else',
      ttlMs: 60_000,
    });
    expect(held.status).toBe('ACQUIRED');
    await runDueJobs(harness.services, [outboxDrainJob], later(), jobsState('drainer-3'));
    expect(await rows(tenantId)).toHaveLength(0);
    expect((await harness.services.store.snapshot(tenantId)).outboxMicro).toBe(50n);
    await harness.services.store.releaseLease({
      resource: leaseResource(outboxDrainJob),
      holder: 'someone-else',
    });
  });

  it('the conservation job repairs a stale balance of an indexed tenant and records it', async () => {
    const tenantId = await tenantWithUnwrittenCharges('Stale', [400n]);
    await runDueJobs(harness.services, [outboxDrainJob], later(), jobsState('drainer-4'));
    expect(await accountBalance(harness.db, accounts.spent(tenantId))).toBe(400n);
    // As a restore from an old snapshot would: the charge forgotten by the store.
    await raw.hset(`${harness.shared.keyPrefix}${tenantKey(tenantId)}:bal`, 'committed', '0');

    const job = conservationJob({ intervalMs: 300_000 });
    await runDueJobs(harness.services, [job], Date.now(), jobsState('checker-1'));

    expect(await harness.services.store.snapshot(tenantId)).toMatchObject({
      creditedMicro: 1_000_000n,
      committedMicro: 400n,
      availableMicro: 999_600n,
    });
    const recorded = await harness.db
      .select({ outcome: conservationChecks.outcome, drift: conservationChecks.driftMicro })
      .from(conservationChecks)
      .where(eq(conservationChecks.tenantId, tenantId));
    expect(recorded).toEqual([{ outcome: 'repaired', drift: 400n }]);
    const [count] = await harness.db
      .select({ n: sql<string>`count(*)::text` })
      .from(conservationChecks)
      .where(eq(conservationChecks.outcome, 'repaired'));
    expect(Number(count?.n)).toBe(1);
  }, 20_000);

  it('the unsettled-spend run stops at a fence that fails: that row stays unsettled and its reservation open', async () => {
    const { services } = harness;
    const tenantId = (await createTenant(services, { name: 'Fenced', tier: 4 })).id;
    await grantCredits(services, { tenantId, amountMicro: 1_000_000n, reason: 'jobs', grantedBy: 'test' });
    const admitted = await services.store.admit(
      admitInput(tenantId, { costMicro: 1_000n, nowMs: Date.now() }),
    );
    expect(admitted.status).toBe('ADMITTED');
    if (admitted.status !== 'ADMITTED') return;
    // Its finalize failed (the store was down): the charge waits in an unsettled row.
    await services.spend.unsettled({
      reservationId: admitted.reservationId,
      tenantId,
      keyId: 'key_1',
      pool: 'standard',
      promptTokens: 2,
      completionTokens: 3,
      costMicro: 700n,
      free: false,
    });
    const lost = new Error('lease lost');
    await expect(services.spend.settleUnsettled({ beforeWrite: () => Promise.reject(lost) })).rejects.toBe(
      lost,
    );
    expect(await rows(tenantId)).toHaveLength(0);
    expect(await services.store.snapshot(tenantId)).toMatchObject({
      reservedMicro: 1_000n,
      committedMicro: 0n,
    });

    expect(await services.spend.settleUnsettled({ beforeWrite: async () => {} })).toBeGreaterThanOrEqual(1);
    expect(await rows(tenantId)).toHaveLength(1);
    expect(await services.store.snapshot(tenantId)).toMatchObject({
      reservedMicro: 0n,
      committedMicro: 700n,
    });
  });
});
