import type { CancelSignal } from '../cancellation.js';

/** Waits `ms`, or less if `signal` aborts first; never rejects, leaves no listener behind. */
export function sleep(ms: number, signal: CancelSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
