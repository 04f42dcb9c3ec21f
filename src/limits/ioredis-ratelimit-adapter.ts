import { createHash } from 'node:crypto';
import { Ratelimit } from '@upstash/ratelimit';
import type { Redis } from 'ioredis';
import type { SharedWindows } from './preauth.js';

/**
 * @upstash/ratelimit over ioredis (DESIGN.md §3). The library talks to an @upstash/redis client,
 * but calls only `evalsha(hash, keys, args)` and, when the error text contains NOSCRIPT,
 * `eval(script, keys, args)` — plus `get`/`set`/`del` for dynamic limits, which we keep off.
 *
 * Its scripts start with `#!lua flags=allow-key-locking`, an Upstash-only flag that Redis 7
 * refuses ("Unexpected flag in script shebang"), and the hashes it pins are SHA-1s of the source
 * with that line. So this adapter:
 * - on `eval`, replaces a leading `#!lua …` line with an empty line (Lua line numbers in Redis's
 *   error messages still match the library's source; without a shebang Redis runs the script in
 *   its compatibility mode, which is what the flags asked for anyway), runs it, and remembers the
 *   library's hash (SHA-1 of the original) → the stripped source's own SHA-1;
 * - on `evalsha`, runs the stripped script by its own SHA-1; a hash it has not seen yet (first
 *   call in this process) is answered with a NOSCRIPT error, so the library sends the source once.
 *   A Redis that lost its script cache (restart, SCRIPT FLUSH) answers NOSCRIPT itself and the
 *   library recovers the same way. Steady state: one EVALSHA round trip per `limit()`.
 *
 * Keys pass through unchanged: the ioredis client's own `keyPrefix` applies to them.
 */
export type RatelimitRedis = ConstructorParameters<typeof Ratelimit>[0]['redis'];

export interface IoredisRatelimitAdapter {
  evalsha(hash: string, keys: string[], args: unknown[]): Promise<unknown>;
  eval(script: string, keys: string[], args: unknown[]): Promise<unknown>;
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<unknown>;
  del(...keys: string[]): Promise<number>;
  /** This object typed as the library's `redis` option. */
  asRatelimitRedis(): RatelimitRedis;
}

const SHEBANG = /^#!lua[^\n]*/;

export function ioredisRatelimitAdapter(client: Redis): IoredisRatelimitAdapter {
  // The library's hash → the SHA-1 of the stripped source Redis knows it by. A handful of entries:
  // one per script the library ships.
  const ownSha = new Map<string, string>();

  const adapter: IoredisRatelimitAdapter = {
    evalsha: async (hash, keys, args) => {
      const sha = ownSha.get(hash);
      if (sha === undefined) throw new Error(`NOSCRIPT ${hash} not yet loaded through this adapter`);
      return client.evalsha(sha, keys.length, ...keys, ...args.map(argument));
    },
    eval: async (script, keys, args) => {
      const stripped = script.replace(SHEBANG, '');
      const reply = await client.eval(stripped, keys.length, ...keys, ...args.map(argument));
      // Only after Redis accepted the source: a script it refused must not be cached as known.
      ownSha.set(sha1(script), sha1(stripped));
      return reply;
    },
    // Dynamic limits store a number; @upstash/redis returns it parsed, so do we.
    get: async (key) => {
      const value = await client.get(key);
      if (value === null) return null;
      const number = Number(value);
      return value.trim() !== '' && Number.isFinite(number) ? number : value;
    },
    set: async (key, value) => client.set(key, typeof value === 'string' ? value : JSON.stringify(value)),
    del: async (...keys) => (keys.length === 0 ? 0 : client.del(...keys)),
    // The library's type is the whole @upstash/redis client; at run time it needs only the above.
    asRatelimitRedis: () => adapter as unknown as RatelimitRedis,
  };
  return adapter;
}

/** @upstash/redis sends arguments as JSON values; Redis wants strings (`null` → empty). */
function argument(value: unknown): string {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : String(value);
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}

/**
 * The pre-auth limiters' shared windows (preauth.ts) over ioredis: @upstash/ratelimit's sliding
 * window through the adapter above. Node only (the Workers limiters are in-process).
 */
export function redisWindows(redis: Redis): SharedWindows {
  const adapter = ioredisRatelimitAdapter(redis);
  return {
    // While ioredis reconnects, a command would wait in its offline queue: do not send one.
    usable: () => redis.status !== 'reconnecting' && redis.status !== 'close' && redis.status !== 'end',
    window: (options) =>
      new Ratelimit({
        redis: adapter.asRatelimitRedis(),
        limiter: Ratelimit.slidingWindow(options.limit, `${options.windowMs} ms`),
        prefix: options.prefix,
        ephemeralCache: options.ephemeralCache,
        timeout: options.timeoutMs,
        analytics: false,
        // Protection fetches deny lists from the internet: never.
        enableProtection: false,
        enableTelemetry: false,
      }),
  };
}
