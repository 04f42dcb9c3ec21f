import type { IndexedTenant } from '../store/contracts.js';
import type { Store } from '../store/typed-store.js';

// 1 min: one extra store call per tenant per minute per process, and a tenant's mark is never more
// than a minute older than its newest reservation (the reaper's prune rule counts on that).
export const TENANT_MARK_PERIOD_MS = 60_000;

/**
 * Marks tenants in the store's tenant index (`store.markTenant`) before they reserve anything, so
 * the reaper finds every tenant that may hold a reservation. A tenant is marked before its first
 * admission in each period by this process; later admissions in the period cost nothing. The mark
 * is awaited: a process that dies right after an admit has already indexed the tenant.
 */
export class TenantActivity {
  /** When this process last marked each tenant (the mark's own time). */
  private readonly markedAt = new Map<string, number>();
  /** Marks on their way, so concurrent first requests of a tenant share one store call. */
  private readonly marking = new Map<string, Promise<void>>();
  private sweptAtMs = 0;

  constructor(private readonly store: Store) {}

  /**
   * Resolves once the tenant is in the index with a time within the last period; undefined when
   * it already is (no promise on the hot path). Rejects as the store does (StoreUnavailable).
   */
  mark(tenantId: string, nowMs: number): Promise<void> | undefined {
    const at = this.markedAt.get(tenantId);
    if (at !== undefined && nowMs - at < TENANT_MARK_PERIOD_MS) return undefined;
    const pending = this.marking.get(tenantId);
    if (pending !== undefined) return pending;
    const marked = this.store
      .markTenant({ tenantId, nowMs })
      .then((result) => {
        // Ids were checked before admission: a refusal here is our fault.
        if (result.status !== 'MARKED') throw new Error(`tenant index refused ${result.field}`);
        this.markedAt.set(tenantId, nowMs);
        this.sweep(nowMs);
      })
      .finally(() => this.marking.delete(tenantId));
    this.marking.set(tenantId, marked);
    return marked;
  }

  /** Once a period, forgets the marks that are due again, so the map holds recent tenants only. */
  private sweep(nowMs: number): void {
    if (nowMs - this.sweptAtMs < TENANT_MARK_PERIOD_MS) return;
    this.sweptAtMs = nowMs;
    for (const [tenantId, at] of this.markedAt) {
      if (nowMs - at >= TENANT_MARK_PERIOD_MS) this.markedAt.delete(tenantId);
    }
  }
}

/**
 * Every tenant in the store's tenant index, a page at a time, for the jobs that visit them all
 * (reaper, outbox drain, conservation). Pages follow tenant ids in byte order, so a tenant marked
 * or pruned meanwhile never makes the walk skip another.
 */
export async function* indexedTenantPages(store: Store, pageSize = 100): AsyncGenerator<IndexedTenant[]> {
  let after: string | undefined;
  for (;;) {
    const page = await store.listTenants({ limit: pageSize, ...(after === undefined ? {} : { after }) });
    if (page.status !== 'PAGE') throw new Error(`tenant index refused ${page.field}`);
    if (page.tenants.length > 0) yield page.tenants;
    if (page.next === null) return;
    after = page.next;
  }
}
