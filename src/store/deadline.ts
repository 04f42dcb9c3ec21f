/**
 * Rejects with `timeout()` when `promise` has not settled within `ms`, judged fairly under
 * event-loop lag. Timers run before the poll phase: after a long turn of the loop (a burst of
 * requests, a major GC) the timer can fire while the reply already sits unread in the socket.
 * So the verdict waits for `setImmediate`, which runs after the poll phase has read what arrived;
 * only a reply that has really not come by then is a timeout. ioredis's own `commandTimeout`
 * judges at the timer, so the store's client does not use it (docs/performance.md).
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, timeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (settled) return;
        settled = true;
        reject(timeout());
      });
    }, ms);
    promise.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
