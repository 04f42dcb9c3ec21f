import { hydrateFromBook } from '../ledger/hydrate.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';

export interface Balance {
  creditedMicro: string;
  committedMicro: string;
  reservedMicro: string;
  availableMicro: string;
}

/**
 * A tenant's figures from the store, read atomically; money as decimal strings. A balance the
 * store lost is rebuilt from the book first (hydrate writes only while absent), so a read never
 * shows 0 for a funded tenant; balance reads are admin and member calls, not the request path.
 */
export async function getBalance(services: Services, tenantId: string): Promise<Balance> {
  await getTenant(services, tenantId);
  await hydrateFromBook(services, tenantId);
  const snapshot = await services.store.snapshot(tenantId);
  return {
    creditedMicro: snapshot.creditedMicro.toString(),
    committedMicro: snapshot.committedMicro.toString(),
    reservedMicro: snapshot.reservedMicro.toString(),
    availableMicro: snapshot.availableMicro.toString(),
  };
}
