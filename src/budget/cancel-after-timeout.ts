import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/typed-store.js';

export interface CancelAfterTimeoutOptions {
  /** First retry delay; it doubles up to `maxDelayMs`. */
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** Give up after this long: by then the reaper releases a reservation the late admit made. */
  giveUpAfterMs: number;
}

/**
 * Cancels the reservations whose admit timed out. The gateway chose the id, and a timed-out admit
 * may still run when the store comes back: the cancel, retried until the store answers, releases
 * that reservation, or — when it arrives first — leaves a tombstone the late admit respects
 * (budget_finalize v3, admit v4). Runs in the background of the request that answered 503.
 */
export class CancelAfterTimeout {
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private stopped = false;
  private readonly firstDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly options: CancelAfterTimeoutOptions,
  ) {
    this.firstDelayMs = options.firstDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 5_000;
  }

  /** Cancels `reservationId` now, and again with backoff while the store does not answer. */
  schedule(tenantId: string, reservationId: string, nowMs: number): void {
    if (this.stopped) return;
    const giveUpAt = Date.now() + this.options.giveUpAfterMs;
    const attempt = (delayMs: number) => {
      this.store.cancel({ tenantId, reservationId, nowMs }).then(
        () => undefined,
        (error: unknown) => {
          if (this.stopped || Date.now() + delayMs > giveUpAt) {
            this.log.warn({ err: error, tenantId, reservationId }, 'cancel after an admit timeout gave up');
            return;
          }
          const timer = setTimeout(() => {
            this.timers.delete(timer);
            attempt(Math.min(delayMs * 2, this.maxDelayMs));
          }, delayMs);
          this.timers.add(timer);
        },
      );
    };
    attempt(this.firstDelayMs);
  }

  /** Drops the pending retries (services.stop()). */
  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
