import type { ScriptName } from './scripts.generated.js';

/**
 * The store port: the fast shared state behind admission, limits and settlement (DESIGN.md §3).
 * An engine is a `ScriptRunner`: it runs one of the registered scripts atomically, with string
 * arguments, and returns its reply array. `createStore` (typed-store.ts) turns that into the typed
 * `Store` every caller uses, so encoding and decoding exist once for all engines:
 * `redis` (ioredis), `upstash` (REST, Workers) and `memory` (embedded, TypeScript ports).
 */
export type StoreEngine = 'redis' | 'upstash' | 'memory';

// 500 ms, for every networked engine: a loopback EVALSHA takes ~0.1 ms and a healthy network hop a
// few ms; this leaves room for GC pauses, and a store slower than that is treated as down (fail
// closed where money is at stake).
export const COMMAND_TIMEOUT_MS = 500;

/** A script's reply: a status string first, then strings and integers. */
export type Reply = (string | number)[];

export interface ScriptRunner {
  readonly engine: StoreEngine;
  /** Runs a script atomically. Rejects with StoreUnavailable when the store cannot answer in time. */
  run(script: ScriptName, keys: string[], args: string[]): Promise<Reply>;
  /** Resolves when the store answers; rejects (within the command timeout) when it does not. */
  ping(): Promise<void>;
  /** Releases connections. Idempotent. */
  close(): Promise<void>;
}
