import type { Services } from '../services.js';
import { CONTRACT_VERSION, VERSION } from '../version.js';

export interface SystemInfo {
  version: string;
  contractVersion: string;
  engines: { database: string; store: string; upstream: string };
}

/** What an operator needs to know about a running instance. The script registry joins it with the engine. */
export function systemInfo(services: Services): SystemInfo {
  return {
    version: VERSION,
    contractVersion: CONTRACT_VERSION,
    engines: {
      database: services.engines.db,
      store: services.engines.store,
      upstream: services.config.upstream,
    },
  };
}
