import type { Services } from '../services.js';
import { type ScriptInfo, scriptInfo } from '../store/typed-store.js';
import type { UpstreamStatus } from '../upstream/port.js';
import { CONTRACT_VERSION, VERSION } from '../version.js';

export interface SystemInfo {
  version: string;
  contractVersion: string;
  engines: { database: string; store: string; upstream: string };
  scripts: ScriptInfo[];
  /** The upstream's contract check (finn: its `GET /health` version) and its circuit breaker. */
  upstream: UpstreamStatus;
}

/** What an operator needs to know about a running instance. */
export function systemInfo(services: Services): SystemInfo {
  return {
    version: VERSION,
    contractVersion: CONTRACT_VERSION,
    engines: {
      database: services.engines.db,
      store: services.engines.store,
      upstream: services.config.upstream,
    },
    scripts: scriptInfo(),
    upstream: services.upstream.status(),
  };
}
