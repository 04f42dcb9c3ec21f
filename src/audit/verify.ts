import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';
import { type AuditVerdict, PLATFORM_CHAIN, verifyChain } from './audit.js';

/** A chain that can be read: the platform's, or an existing tenant's (404 `not_found` otherwise). */
export async function requireChain(services: Services, chain: string): Promise<void> {
  if (chain !== PLATFORM_CHAIN) await getTenant(services, chain);
}

/** `admin.audit.verify`: the tenant's chain (or the platform's) checked from its first row. */
export async function verifyAudit(services: Services, chain: string): Promise<AuditVerdict> {
  await requireChain(services, chain);
  const verdict = await verifyChain(services.db, chain);
  if (!verdict.ok) {
    services.log.error({ chain, seq: verdict.seq, reason: verdict.reason }, 'audit chain broken');
  }
  return verdict;
}
