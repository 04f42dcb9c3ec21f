import { checkTenants } from '../ledger/conservation.js';
import { indexedTenantPages } from '../tenants/activity.js';
import type { Job } from './job.js';

/**
 * Every CONSERVATION_INTERVAL_MS (5 min): each tenant of the tenant index, the store's balance
 * against the book, a confirmed drift repaired by the rule "the book wins" (docs/ledger.md
 * "Conservation"); the repair's write is fenced. A page's suspects wait once for confirmation.
 */
export function conservationJob(options: { intervalMs: number }): Job {
  return {
    name: 'conservation',
    intervalMs: options.intervalMs,
    singleton: true,
    run: async (ctx) => {
      for await (const tenants of indexedTenantPages(ctx.services.store)) {
        if (ctx.signal.aborted) return;
        const tenantIds = tenants.map((tenant) => tenant.tenantId);
        await checkTenants(ctx.services, tenantIds, { repair: true, beforeWrite: () => ctx.fence() });
      }
    },
  };
}
