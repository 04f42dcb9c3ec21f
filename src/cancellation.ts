/**
 * What the request path needs of an AbortSignal: a real AbortSignal satisfies it, and so does a
 * `Cancellation`.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * AbortController's job on the per-request path, as a plain object: on Node 20 every AbortSignal
 * survives young-generation collections (nodejs/node#55328) and takes its listeners — closures over
 * the whole request — into the old generation with it (figures: docs/performance.md).
 *
 * Semantics as AbortController's: aborts once, with a reason (an `AbortError` DOMException when
 * none is given); listeners run once, in the order added; a listener added after the abort never
 * runs; one added twice runs once.
 */
export class Cancellation implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: (() => void)[] | undefined;

  /** The signal side, for symmetry with AbortController: this object itself. */
  get signal(): CancelSignal {
    return this;
  }

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason ?? new DOMException('This operation was aborted', 'AbortError');
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners === undefined) return;
    let failure: { error: unknown } | undefined;
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        // Every listener runs; the first failure is rethrown after them.
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return;
    this.listeners ??= [];
    if (!this.listeners.includes(listener)) this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const index = this.listeners?.indexOf(listener) ?? -1;
    if (index >= 0) this.listeners?.splice(index, 1);
  }
}
