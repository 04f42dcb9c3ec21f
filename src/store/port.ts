/**
 * The store port: the fast shared state behind admission, limits and settlement (DESIGN.md §3).
 * Engines: `redis` (ioredis, production Node), `upstash` (REST, Workers), `memory` (embedded,
 * one process). The scripts and their contracts arrive with the engine; the port starts with what
 * readiness needs.
 */
export type StoreEngine = 'redis' | 'upstash' | 'memory';

export interface Store {
  readonly engine: StoreEngine;
  /** Resolves when the store answers; rejects (within the command timeout) when it does not. */
  ping(): Promise<void>;
  /** Releases connections. Idempotent. */
  close(): Promise<void>;
}
