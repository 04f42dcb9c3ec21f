export type * from './contracts.js';
export { FencingOverflow, StoreUnavailable } from './errors.js';
export { memoryRunner, memoryStore } from './memory/index.js';
export { COMMAND_TIMEOUT_MS, type Reply, type ScriptRunner, type StoreEngine } from './port.js';
export { redisOptions, redisRunner, redisStore } from './redis.js';
export { createStore, periodOf, type ScriptInfo, type Store, scriptInfo } from './typed-store.js';
export { type UpstashStoreOptions, upstashRunner, upstashStore } from './upstash.js';
