import { Redis, type RedisOptions, ReplyError } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { withDeadline } from './deadline.js';
import { isOutageReply, StoreUnavailable } from './errors.js';
import { COMMAND_TIMEOUT_MS, type Reply, type ScriptRunner } from './port.js';
import { SCRIPTS } from './scripts.generated.js';
import { createStore, type Store } from './typed-store.js';

export interface RedisStoreOptions {
  url: string;
  log: Logger;
  /** Prepended to every key; tests use one per file so files never share state. */
  keyPrefix?: string;
  metrics?: Metrics;
}

// 5 s: long enough for a TLS handshake to a managed Redis across a region, short enough that a
// dead address is noticed while an operator is still looking at /ready.
export const CONNECT_TIMEOUT_MS = 5_000;
// Reconnect errors repeat every retry; one log line per interval is enough to see an outage.
const ERROR_LOG_INTERVAL_MS = 10_000;

export function redisOptions(keyPrefix?: string): Omit<RedisOptions, 'replyMapping'> {
  return { ...connectionOptions(keyPrefix), commandTimeout: COMMAND_TIMEOUT_MS };
}

/** Without a command timeout: the store's client bounds each command itself (`withDeadline`). */
function connectionOptions(keyPrefix?: string): Omit<RedisOptions, 'replyMapping'> {
  return {
    connectTimeout: CONNECT_TIMEOUT_MS,
    // One retry: a command either reaches a live Redis quickly or fails so the caller can fail closed.
    maxRetriesPerRequest: 1,
    enableAutoPipelining: false,
    ...(keyPrefix === undefined ? {} : { keyPrefix }),
  };
}

/**
 * The production engine: the Lua scripts of lua/ through ioredis. EVALSHA first (one round trip);
 * on NOSCRIPT (a restarted or flushed Redis) EVAL sends the source once, which also caches it.
 */
export function redisRunner(options: RedisStoreOptions): ScriptRunner & { readonly client: Redis } {
  const client = new Redis(options.url, connectionOptions(options.keyPrefix));
  const timedOut = () => new Error(`Redis did not answer within ${COMMAND_TIMEOUT_MS} ms`);
  const bounded = <T>(command: Promise<T>) => withDeadline(command, COMMAND_TIMEOUT_MS, timedOut);
  let lastErrorLoggedAt = 0;
  // Without a listener, a connection blip is an unhandled 'error' event and kills the process.
  client.on('error', (error: Error) => {
    const now = Date.now();
    if (now - lastErrorLoggedAt < ERROR_LOG_INTERVAL_MS) return;
    lastErrorLoggedAt = now;
    options.log.warn({ err: { message: error.message } }, 'redis connection error');
  });

  let closed = false;
  return {
    engine: 'redis',
    client,
    run: async (name, keys, args) => {
      const script = SCRIPTS[name];
      try {
        try {
          return (await bounded(client.evalsha(script.sha1, keys.length, ...keys, ...args))) as Reply;
        } catch (error) {
          if (!(isReplyError(error) && error.message.startsWith('NOSCRIPT'))) throw error;
          return (await bounded(client.eval(script.source, keys.length, ...keys, ...args))) as Reply;
        }
      } catch (error) {
        // A ReplyError is Redis answering (a script bug, a wrong type): a fault, not an outage.
        if (isReplyError(error) && !isOutageReply(error.message)) throw error;
        throw new StoreUnavailable({ cause: error });
      }
    },
    ping: async () => {
      await bounded(client.ping());
    },
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await client.quit();
      } catch {
        client.disconnect();
      }
    },
  };
}

/** ioredis types ReplyError as `any`; this narrows it. */
function isReplyError(error: unknown): error is Error {
  return error instanceof (ReplyError as new () => Error);
}

export function redisStore(options: RedisStoreOptions): Store {
  return createStore(redisRunner(options), options);
}
