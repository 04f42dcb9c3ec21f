import { hostname } from 'node:os';
import type { Services } from '../services.js';

/**
 * Every few seconds on each instance: re-read the signing keys (a rotation made elsewhere becomes
 * visible long before its key activates), rotate when SIGNING_ROTATE_DAYS says so — one instance
 * only, under a lease — and keep the key-age gauge current.
 */
export async function maintainSigningKeys(services: Services): Promise<void> {
  const { signing, store, log, metrics } = services;
  await signing.start();
  if (signing.rotationDue()) {
    const holder = `${hostname()}:${process.pid}`.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 128);
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
