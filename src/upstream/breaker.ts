import type { Clock } from '../clock.js';

// 3 failures / 30 s (DESIGN.md §4): long enough for a restarting upstream to come back, short
// enough that callers are not turned away long after it has.
export const BREAKER_FAILURES = 3;
export const BREAKER_OPEN_MS = 30_000;

/**
 * A circuit breaker per upstream: `BREAKER_FAILURES` consecutive failed requests open it; while
 * open every request is refused at once; after `BREAKER_OPEN_MS` exactly one request goes through
 * as a probe (half-open) — its success closes the breaker, its failure opens it again. Hand-written
 * (40 lines) rather than a library so it runs on the services clock, which tests move.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt: number | undefined;
  private probing = false;
  private probeStartedAt = 0;

  constructor(
    private readonly clock: Clock,
    private readonly threshold = BREAKER_FAILURES,
    private readonly openMs = BREAKER_OPEN_MS,
  ) {}

  get state(): 'closed' | 'open' | 'half_open' {
    if (this.openedAt === undefined) return 'closed';
    return this.clock.now() - this.openedAt >= this.openMs ? 'half_open' : 'open';
  }

  /** Whether a request may go to the upstream now; the caller then reports `success` or `failure`. */
  tryAcquire(): { allowed: true; probe: boolean } | { allowed: false } {
    const state = this.state;
    if (state === 'closed') return { allowed: true, probe: false };
    // A probe that never reported (its request vanished) gives way to a new one after openMs.
    const probeAlive = this.probing && this.clock.now() - this.probeStartedAt < this.openMs;
    if (state === 'open' || probeAlive) return { allowed: false };
    this.probing = true;
    this.probeStartedAt = this.clock.now();
    return { allowed: true, probe: true };
  }

  success(): void {
    this.failures = 0;
    this.openedAt = undefined;
    this.probing = false;
  }

  failure(): void {
    this.failures += 1;
    if (this.probing || this.failures >= this.threshold) this.openedAt = this.clock.now();
    this.probing = false;
  }

  /** A request that ended without saying anything about the upstream (the client left first). */
  release(probe: boolean): void {
    if (probe) this.probing = false;
  }
}
