import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';

export interface Balance {
  creditedMicro: string;
  committedMicro: string;
  reservedMicro: string;
  availableMicro: string;
}

/** A tenant's figures from the store, read atomically; money as decimal strings. */
export async function getBalance(services: Services, tenantId: string): Promise<Balance> {
  await getTenant(services, tenantId);
  const snapshot = await services.store.snapshot(tenantId);
  return {
    creditedMicro: snapshot.creditedMicro.toString(),
    committedMicro: snapshot.committedMicro.toString(),
    reservedMicro: snapshot.reservedMicro.toString(),
    availableMicro: snapshot.availableMicro.toString(),
  };
}
