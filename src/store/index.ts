export { memoryStore } from './memory.js';
export type { Store, StoreEngine } from './port.js';
export { redisStore } from './redis.js';
