import { errors, Redis } from '@upstash/redis';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { isOutageReply, StoreUnavailable } from './errors.js';
import { COMMAND_TIMEOUT_MS, type Reply, type ScriptRunner } from './port.js';
import { SCRIPTS } from './scripts.generated.js';
import { createStore, type Store } from './typed-store.js';

export interface UpstashStoreOptions {
  /** The database's REST URL (UPSTASH_REDIS_REST_URL). */
  url: string;
  /** The REST token (UPSTASH_REDIS_REST_TOKEN): sent as a bearer, never logged. */
  token: string;
  log: Logger;
  /** Deadline of one HTTP request. */
  timeoutMs?: number;
  metrics?: Metrics;
}

// Outages repeat on every request; one log line per interval is enough to see one.
const ERROR_LOG_INTERVAL_MS = 10_000;
// @upstash/redis appends this and the JSON of the command (script source, arguments) to the text
// of a non-2xx reply.
const COMMAND_SUFFIX = ', command was: ';
// Redis error replies start with an upper-case code: ERR, NOSCRIPT, WRONGTYPE, BUSY, … Some
// Upstash-compatible servers put their own words first ("Failed to execute Redis command: NOSCRIPT
// …"), so the code is found at the start of the text or after a colon.
const REDIS_ERROR = /(?:^|: )([A-Z][A-Z0-9_]*(?: [\s\S]*)?)$/;

/**
 * The REST engine (Upstash; Workers and other runtimes without TCP): the same Lua scripts as the
 * ioredis engine, one HTTPS request per command. EVALSHA first; on NOSCRIPT, EVAL sends the source
 * once, which also caches it. The REST API is stateless, so there is no connection to manage.
 */
export function upstashRunner(options: UpstashStoreOptions): ScriptRunner {
  const timeoutMs = options.timeoutMs ?? COMMAND_TIMEOUT_MS;
  const client = new Redis({
    url: options.url,
    token: options.token,
    // Replies exactly as Redis sends them. By default the client JSON-parses every string of a
    // reply ("123" becomes 123, "null" becomes null) and asks the server to base64 them.
    automaticDeserialization: false,
    responseEncoding: false,
    // One request per command, nothing batched behind our back, no extra headers.
    enableAutoPipelining: false,
    enableTelemetry: false,
    latencyLogging: false,
    // One immediate retry of a request that failed on the network (a keep-alive socket the server
    // had closed), within the same deadline: the REST counterpart of ioredis's
    // `maxRetriesPerRequest: 1`. Every script is idempotent by its ids.
    retry: { retries: 1, backoff: () => 0 },
    // A fresh deadline for every HTTP request. It must be a function: given a plain AbortSignal,
    // the client turns an abort into a successful reply whose result is the abort reason.
    signal: () => AbortSignal.timeout(timeoutMs),
  });

  let lastErrorLoggedAt = 0;
  const unavailable = (error: unknown): StoreUnavailable => {
    const now = Date.now();
    if (now - lastErrorLoggedAt >= ERROR_LOG_INTERVAL_MS) {
      lastErrorLoggedAt = now;
      options.log.warn({ err: { message: describe(error) } }, 'upstash request failed');
    }
    return new StoreUnavailable({ cause: error });
  };

  return {
    engine: 'upstash',
    run: async (name, keys, args) => {
      const script = SCRIPTS[name];
      try {
        let reply: unknown;
        try {
          reply = await client.evalsha(script.sha1, keys, args);
        } catch (error) {
          if (!redisErrorText(error)?.includes('NOSCRIPT')) throw error;
          reply = await client.eval(script.source, keys, args);
        }
        if (!isReply(reply)) throw new Error(`upstash: malformed reply to ${name}`);
        return reply;
      } catch (error) {
        // Redis answering with an error reply (a script bug, a wrong type): a fault, not an outage.
        const text = redisErrorText(error);
        if (text !== null && !isOutageReply(text)) throw error;
        throw unavailable(error);
      }
    },
    ping: async () => {
      await client.ping();
    },
    close: async () => {},
  };
}

export function upstashStore(options: UpstashStoreOptions): Store {
  return createStore(upstashRunner(options), options);
}

/**
 * The text of a Redis error reply from its code on, or null when the error is not one: the REST
 * API answers a failed command with HTTP 400 `{"error":"ERR …"}` (or `{"error":"<words>: ERR …"}`),
 * which the client throws as an UpstashError.
 * Network failures, timeouts and gateway pages (5xx, HTML) are something else. The client does not
 * expose the HTTP status, so the reply is recognised by its Redis error code.
 */
function redisErrorText(error: unknown): string | null {
  if (!(error instanceof errors.UpstashError) || error instanceof errors.UpstashJSONParseError) return null;
  const end = error.message.indexOf(COMMAND_SUFFIX);
  const text = end === -1 ? error.message : error.message.slice(0, end);
  return REDIS_ERROR.exec(text)?.[1] ?? null;
}

function isReply(value: unknown): value is Reply {
  return Array.isArray(value) && value.every((item) => typeof item === 'string' || typeof item === 'number');
}

/** A failure's message and its cause's (fetch hides the network error in `cause`). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  // Only the head of a client error: the rest is the command, with the script source.
  const end = error.message.indexOf(COMMAND_SUFFIX);
  return `${end === -1 ? error.message : error.message.slice(0, end)}${cause}`;
}
