import type { Store } from './port.js';

/**
 * The embedded engine: state lives in this process, so it is for a single instance only
 * (the `npm start` default). It implements the same contracts as the Lua scripts.
 */
export function memoryStore(): Store {
  return {
    engine: 'memory',
    ping: async () => {},
    close: async () => {},
  };
}
