import type { Services } from '../services.js';
import type { Job } from './job.js';

// 10 s: a key rotated on another instance is published for JWKS_MAX_AGE_SECONDS (300 s) before
// it signs; every instance sees it within 10 s.
const SIGNING_MAINTENANCE_MS = 10_000;

/**
 * Every few seconds on each instance: re-read the signing keys (a rotation made elsewhere becomes
 * visible long before its key activates), rotate when SIGNING_ROTATE_DAYS says so — one instance
 * only, under a lease — and keep the key-age gauge current. `holder` names this instance in the
 * rotation lease.
 */
export async function maintainSigningKeys(services: Services, holder: string): Promise<void> {
  const { signing, store, log, metrics } = services;
  await signing.start();
  if (signing.rotationDue()) {
    const lease = await store.acquireLease({ resource: 'signing-rotation', holder, ttlMs: 60_000 });
    if (lease.status === 'ACQUIRED') {
      try {
        const key = await signing.rotate();
        log.info({ kid: key.kid, activatesAt: key.activatedAt }, 'automatic signing key rotation');
      } finally {
        await store.releaseLease({ resource: 'signing-rotation', holder });
      }
    }
  }
  const health = signing.health();
  if (health.activeKeyAgeDays !== null)
    metrics.signingKeyAgeSeconds.set(Math.round(health.activeKeyAgeDays * 86_400));
  if (health.warning !== null)
    log.warn({ warning: health.warning, kid: health.activeKid }, 'signing key warning');
}

/** Every instance keeps its own copy of the keys fresh: not a singleton. */
export const signingMaintenanceJob: Job = {
  name: 'signing-maintenance',
  intervalMs: SIGNING_MAINTENANCE_MS,
  singleton: false,
  run: (ctx) => maintainSigningKeys(ctx.services, ctx.holder),
};
