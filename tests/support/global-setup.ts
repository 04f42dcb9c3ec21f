import type { TestProject } from 'vitest/node';
import { startRedisServer } from './redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The Redis every integration file shares (each with its own key prefix). */
    redisUrl: string;
    /** The PostgreSQL server to create per-file databases in; empty means PGlite. */
    databaseUrl: string;
  }
}

/**
 * Integration tests use the machine's services when REDIS_URL / DATABASE_URL are set (CI sets
 * both). Without REDIS_URL a redis-server is started on a free port; without DATABASE_URL each
 * file gets an in-memory PGlite.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const databaseUrl = process.env.DATABASE_URL?.trim() ?? '';
  let redisUrl = process.env.REDIS_URL?.trim() ?? '';
  let stop = async () => {};
  if (redisUrl === '') {
    const redis = await startRedisServer();
    redisUrl = redis.url;
    stop = redis.stop;
  }
  project.provide('redisUrl', redisUrl);
  project.provide('databaseUrl', databaseUrl);
  return stop;
}
