import type { ScriptRunner } from '../port.js';
import { createStore, type Store, type StoreOptions } from '../typed-store.js';
import { MemoryKv } from './kv.js';
import { MEMORY_SCRIPTS } from './scripts/index.js';

/**
 * The embedded engine: state lives in this process, so it serves a single instance only (the
 * `npm start` default). Every script runs synchronously to completion, which makes it atomic.
 */
export function memoryRunner(
  options: { wallClockMs?: () => number } = {},
): ScriptRunner & { readonly kv: MemoryKv } {
  const kv = new MemoryKv(options.wallClockMs);
  return {
    engine: 'memory',
    /** The data itself, for tests that plant corrupt values. */
    kv,
    run: async (script, keys, args) => {
      kv.tick();
      return MEMORY_SCRIPTS[script](kv, keys, args);
    },
    ping: async () => {},
    close: async () => {},
  };
}

export function memoryStore(options: StoreOptions): Store {
  return createStore(memoryRunner(), options);
}
