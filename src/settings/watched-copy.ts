import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/typed-store.js';

// 1 s: a change must reach every instance within 5 s (as a key revocation does); one counter read
// per second per instance.
export const SETTINGS_POLL_MS = 1_000;
// 60 s: the copy is reloaded this often even when the counter stands still, so a change whose
// counter bump was lost (Redis down at that moment) still arrives.
export const SETTINGS_RELOAD_MS = 60_000;

/** The copy itself, apart from its loader, so that several Services can share one. */
export interface CopyState<T> {
  value: T | undefined;
  /** The change counter the value was loaded at; -1 until it has been read once. */
  seenChanges: number;
  loadedAt: number;
  checkedAt: number;
  /** Polls of this copy run one at a time, whichever Services started them (an older load never overwrites a newer one). */
  queue: Promise<void>;
  /** The refresh `ensureFresh` started and others join (Workers: one per isolate, not one per request). */
  inFlight: Promise<void> | undefined;
}

export function emptyCopy<T>(): CopyState<T> {
  return {
    value: undefined,
    seenChanges: -1,
    loadedAt: 0,
    checkedAt: 0,
    queue: Promise.resolve(),
    inFlight: undefined,
  };
}

/**
 * A small table's contents in memory, for the request path (no database or store call there),
 * reloaded when its change counter in the store moves (lua/epoch.v1.lua, as the key caches in
 * src/keys/verifier.ts): whoever changes the table bumps the counter, every instance polls it.
 */
export class WatchedCopy<T> {
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly state: CopyState<T>;

  constructor(
    private readonly parts: {
      store: Store;
      clock: Clock;
      log: Logger;
      /** The change counter's name (the store's id alphabet). */
      counter: string;
      load: () => Promise<T>;
      /** A copy shared with other Services (Workers: one per isolate); default its own. */
      state?: CopyState<T> | undefined;
    },
  ) {
    this.state = parts.state ?? emptyCopy();
  }

  /** The copy, or undefined until a load succeeded (callers fall back to their defaults). */
  get value(): T | undefined {
    return this.state.value;
  }

  /**
   * Reloads when the counter moved, or the copy is missing or older than SETTINGS_RELOAD_MS. A
   * store that does not answer does not stop a due reload; a database that does not answer throws.
   */
  refresh(): Promise<void> {
    const run = this.state.queue.then(() => this.poll());
    this.state.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * For Workers (no timers between requests): refreshes when the last check is older than
   * `maxAgeMs`, one refresh at a time for all requests sharing the copy. Only the first load is
   * waited for; later refreshes run while requests are served from the current copy, so a request
   * never waits on the store for settings.
   */
  async ensureFresh(maxAgeMs: number): Promise<void> {
    const { state } = this;
    if (state.value !== undefined && this.parts.clock.now() - state.checkedAt <= maxAgeMs) return;
    if (state.inFlight === undefined) {
      const running = this.refresh().finally(() => {
        state.inFlight = undefined;
      });
      state.inFlight = running;
    }
    const running = state.inFlight;
    if (state.value === undefined) await running;
    else
      void running.catch((error: unknown) =>
        this.parts.log.warn({ err: error, counter: this.parts.counter }, 'settings copy not refreshed'),
      );
  }

  /**
   * After a committed change on this instance: moves the counter (other instances reload within a
   * poll), then reloads here at once. A counter that cannot be moved is logged, not thrown: the
   * change is committed, and other instances reload it within SETTINGS_RELOAD_MS all the same.
   */
  async changed(): Promise<void> {
    try {
      await this.parts.store.changeCounter({ name: this.parts.counter, bump: true });
    } catch (error) {
      this.parts.log.error(
        { err: error, counter: this.parts.counter },
        'a settings change counter could not be moved: other instances see the change late',
      );
    }
    this.state.loadedAt = 0;
    await this.refresh();
  }

  start(): void {
    this.timer ??= setInterval(() => void this.refresh().catch(() => undefined), SETTINGS_POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async poll(): Promise<void> {
    const { store, clock, counter, load } = this.parts;
    const now = clock.now();
    let changes: number | undefined;
    try {
      changes = await store.changeCounter({ name: counter });
    } catch {
      // The store logs its own failures; the copy is still reloaded below when due.
      changes = undefined;
    }
    const moved = changes !== undefined && changes !== this.state.seenChanges;
    const due = this.state.value === undefined || now - this.state.loadedAt >= SETTINGS_RELOAD_MS;
    if (moved || due) {
      this.state.value = await load();
      this.state.loadedAt = now;
      // The counter is read before the load: a change committed meanwhile moves it again.
      if (changes !== undefined) this.state.seenChanges = changes;
    }
    this.state.checkedAt = now;
  }
}
