import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.js';
import { emptyCopy, WatchedCopy } from '../../src/settings/watched-copy.js';
import type { Store } from '../../src/store/typed-store.js';

/**
 * The settings copy as Workers use it: Services built per request, one copy per isolate. The
 * change counter is a controllable stand-in (a unit test: the store's own behaviour is tested in
 * the engine contract tests).
 */
function counterStore() {
  let changes = 0;
  let hold: Promise<void> | undefined;
  let reads = 0;
  const store = {
    changeCounter: async ({ bump }: { name: string; bump?: boolean }) => {
      reads += 1;
      if (hold !== undefined) await hold;
      if (bump === true) changes += 1;
      return changes;
    },
  } as unknown as Store;
  return {
    store,
    reads: () => reads,
    bump: () => {
      changes += 1;
    },
    holdUntil: (gate: Promise<void>) => {
      hold = gate;
    },
    release: () => {
      hold = undefined;
    },
  };
}

describe('a settings copy shared by per-request Services', () => {
  it('loads once for many requests at once, then serves the copy while a later refresh waits on the store', async () => {
    const counter = counterStore();
    const state = emptyCopy<number>();
    let now = 0;
    let loads = 0;
    const copyFor = () =>
      new WatchedCopy<number>({
        store: counter.store,
        clock: { now: () => now },
        log: silentLogger(),
        counter: 'test',
        state,
        load: async () => {
          loads += 1;
          return loads;
        },
      });

    // Ten requests of a cold isolate: one load, every request waits for it.
    await Promise.all(Array.from({ length: 10 }, () => copyFor().ensureFresh(1_000)));
    expect([loads, state.value, counter.reads()]).toEqual([1, 1, 1]);

    // Past the age, with the store hanging: requests return at once with the copy they have.
    now = 5_000;
    counter.bump();
    let open: () => void = () => {};
    counter.holdUntil(
      new Promise<void>((resolve) => {
        open = resolve;
      }),
    );
    const served = await Promise.race([
      Promise.all(Array.from({ length: 10 }, () => copyFor().ensureFresh(1_000))).then(() => 'served'),
      new Promise((resolve) => setTimeout(() => resolve('waited'), 200)),
    ]);
    expect(served).toBe('served');
    expect(state.value).toBe(1);
    // The store answers: one reload for all ten, the new value in place.
    counter.release();
    open();
    await state.inFlight;
    await state.queue;
    expect([loads, state.value, counter.reads()]).toEqual([2, 2, 2]);
  });
});
