import { eq, sql } from 'drizzle-orm';
import { creditGrants, postings, tenants } from '../../db/schema/index.js';
import type { Services } from '../services.js';
import type { HydrateInput, HydrateResult } from '../store/contracts.js';
import { StoreUnavailable } from '../store/errors.js';
import { accounts } from './journal.js';

/**
 * A tenant's balance as the book holds it (docs/ledger.md "Rebuilding the store"): credited is
 * every grant (available + spent), committed every settled charge (spent), and the grants counted,
 * so the store knows them as applied. One statement, so the sums and the grant list are read from
 * the same snapshot: a grant committing meanwhile is in all of them or in none.
 * Undefined when the tenant does not exist.
 */
export async function bookFigures(services: Services, tenantId: string): Promise<HydrateInput | undefined> {
  const sum = (account: string) =>
    sql<string>`(select coalesce(sum(${postings.amountMicro}), 0) from ${postings} where ${postings.account} = ${account})::text`;
  const [row] = await services.db
    .select({
      available: sum(accounts.available(tenantId)),
      spent: sum(accounts.spent(tenantId)),
      // Grant ids are [A-Za-z0-9_-], so ':' and ',' separate them safely.
      grants: sql<string>`coalesce((select string_agg(${creditGrants.id} || ':' || ${creditGrants.amountMicro}::text, ',') from ${creditGrants} where ${creditGrants.tenantId} = ${tenantId}), '')`,
    })
    .from(tenants)
    .where(eq(tenants.id, tenantId))
    .limit(1);
  if (row === undefined) return undefined;
  const spent = BigInt(row.spent);
  return {
    tenantId,
    creditedMicro: BigInt(row.available) + spent,
    committedMicro: spent,
    grants: row.grants === '' ? [] : row.grants.split(',').map(parseGrant),
  };
}

function parseGrant(pair: string): { grantId: string; amountMicro: bigint } {
  const [grantId = '', amount = '0'] = pair.split(':');
  return { grantId, amountMicro: BigInt(amount) };
}

/**
 * Writes the tenant's balance rebuilt from the book to the store, if it is still absent there
 * (after admit or credit answered HYDRATE). Instances racing on the same tenant write it once.
 */
export async function hydrateFromBook(services: Services, tenantId: string): Promise<HydrateResult> {
  const figures = (await bookFigures(services, tenantId)) ?? {
    tenantId,
    creditedMicro: 0n,
    committedMicro: 0n,
    grants: [],
  };
  const result = await services.store.hydrate(figures);
  if (result.status === 'INVALID_INPUT') {
    throw new Error(`hydrate refused the book's figures of ${tenantId}: ${result.field}`);
  }
  services.log.info({ tenantId, result: result.status }, 'tenant balance hydrated from the book');
  return result;
}

/**
 * Runs a store call that answers HYDRATE while the tenant's balance is absent: hydrates from the
 * book and runs it once more. A second HYDRATE (the balance vanished again at once) is a store
 * fault: 503.
 */
export async function withHydration<R extends { status: string }>(
  services: Services,
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
