import { eq, sql } from 'drizzle-orm';
import { creditGrants, cryptoPayments, postings, spend, tenants } from '../../db/schema/index.js';
import { asTenant } from '../../db/scope.js';
import type { Services } from '../services.js';
import type { HydrateInput, HydrateResult } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import { accounts } from './journal.js';

/**
 * A tenant's balance as the book holds it (docs/ledger.md "Rebuilding the store"): credited is
 * every grant less every refund (available + spent), committed every settled charge (spent), and
 * the grants and refund debits counted, so the store knows them as applied; and this month's
 * settled charges, per tenant and per key, for the monthly caps. One statement, so every figure is
 * read from the same snapshot: a grant, a refund or a drained spend batch committing meanwhile is
 * in all of them or in none.
 * Undefined when the tenant does not exist.
 */
export async function bookFigures(
  services: Pick<Services, 'db'>,
  tenantId: string,
  nowMs: number,
): Promise<HydrateInput | undefined> {
  const sum = (account: string) =>
    sql<string>`(select coalesce(sum(${postings.amountMicro}), 0) from ${postings} where ${postings.account} = ${account})::text`;
  const now = new Date(nowMs);
  const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const monthEnd = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  const [row] = await asTenant(services.db, tenantId, (tx) =>
    tx
      .select({
        available: sum(accounts.available(tenantId)),
        spent: sum(accounts.spent(tenantId)),
        // Grant and key ids are [A-Za-z0-9_-], so ':' and ',' separate them safely. The applied ids
        // are the grants and each refund's debit with what the book took back (already netted in
        // available). The debit id is `refundDebitId` of src/payments/engine.ts, spelled out
        // here because that module imports this one (through engine.ts).
        grants: sql<string>`coalesce((select string_agg(a.id || ':' || a.amount::text, ',') from (select ${creditGrants.id} as id, ${creditGrants.amountMicro} as amount from ${creditGrants} where ${creditGrants.tenantId} = ${tenantId} union all select 'refund-' || ${cryptoPayments.id}, ${cryptoPayments.refundedMicro} from ${cryptoPayments} where ${cryptoPayments.tenantId} = ${tenantId} and ${cryptoPayments.refundedMicro} > 0) a), '')`,
        // Settled charges only (an unsettled or parked row has no entry in the book), by the month
        // they were settled in.
        keyMonths: sql<string>`coalesce((select string_agg(k.key_id || ':' || k.total::text, ',') from (select ${spend.keyId} as key_id, sum(${spend.costMicro}) as total from ${spend} where ${spend.tenantId} = ${tenantId} and ${spend.settled} and not ${spend.free} and ${spend.costMicro} > 0 and ${spend.createdAt} >= ${monthStart.toISOString()}::timestamptz and ${spend.createdAt} < ${monthEnd.toISOString()}::timestamptz group by ${spend.keyId}) k), '')`,
      })
      .from(tenants)
      .where(eq(tenants.id, tenantId))
      .limit(1),
  );
  if (row === undefined) return undefined;
  const spent = BigInt(row.spent);
  const keys = pairs(row.keyMonths).map(([keyId, committedMicro]) => ({ keyId, committedMicro }));
  return {
    tenantId,
    creditedMicro: BigInt(row.available) + spent,
    committedMicro: spent,
    grants: pairs(row.grants).map(([grantId, amountMicro]) => ({ grantId, amountMicro })),
    month: {
      nowMs,
      tenantCommittedMicro: keys.reduce((total, key) => total + key.committedMicro, 0n),
      keys,
    },
  };
}

/** "a:1,b:2" → [["a", 1n], ["b", 2n]]. */
function pairs(list: string): [string, bigint][] {
  if (list === '') return [];
  return list.split(',').map((pair) => {
    const [id = '', amount = '0'] = pair.split(':');
    return [id, BigInt(amount)];
  });
}

/** What hydration uses: the book, the store, the clock, the log, and this process's spend rows. */
export type HydrationServices = Pick<Services, 'db' | 'store' | 'clock' | 'log' | 'spend'>;

/**
 * Writes the tenant's balance rebuilt from the book to the store, if it is still absent there
 * (after admit, credit or a recovering finalize answered HYDRATE). Instances racing on the same
 * tenant write it once. The settled rows this process still holds are written to the book first:
 * their outbox entries went with the store's data, so the book is the only place the rebuilt
 * balance can learn them from (another instance's are closed by the conservation job).
 */
export async function hydrateFromBook(services: HydrationServices, tenantId: string): Promise<HydrateResult> {
  await services.spend
    .flush()
    .catch((error: unknown) =>
      services.log.warn({ err: error, tenantId }, 'spend rows not written before hydration'),
    );
  const figures = (await bookFigures(services, tenantId, services.clock.now())) ?? {
    tenantId,
    creditedMicro: 0n,
    committedMicro: 0n,
    grants: [],
  };
  const result = await services.store.hydrate(figures);
  if (result.status === 'INVALID_INPUT') {
    throw new Error(`hydrate refused the book's figures of ${tenantId}: ${result.field}`);
  }
  if (result.status === 'HYDRATED') services.log.info({ tenantId }, 'tenant balance hydrated from the book');
  return result;
}

/**
 * Runs a store call that answers HYDRATE while the tenant's balance is absent: hydrates from the
 * book and runs it once more. A second HYDRATE (the balance vanished again at once) is a store
 * fault: 503.
 */
export async function withHydration<R extends { status: string }>(
  services: HydrationServices,
  tenantId: string,
  call: () => Promise<R>,
): Promise<Exclude<R, { status: 'HYDRATE' }>> {
  const first = await call();
  if (first.status !== 'HYDRATE') return first as Exclude<R, { status: 'HYDRATE' }>;
  await hydrateFromBook(services, tenantId);
  const second = await call();
  if (second.status !== 'HYDRATE') return second as Exclude<R, { status: 'HYDRATE' }>;
  services.log.error({ tenantId }, 'tenant balance absent right after hydration');
  throw new StoreUnavailable();
}
