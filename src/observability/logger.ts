import { type DestinationStream, type Logger, pino } from 'pino';
import type { LogLevel } from '../config.js';
import { VERSION } from '../version.js';

export type { Logger };

/**
 * Header and field names whose values are secrets. pino removes them before a line is written,
 * so a careless `log.info({ headers })` cannot leak a key or token.
 */
const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'headers["x-nowpayments-sig"]',
  'token',
  'adminToken',
  'apiKey',
  'secret',
  'password',
  'config',
];

/**
 * Fields of database errors that hold the failed query's values, which can be secrets (a new key's
 * salt and hash): drizzle's and PGlite's `params`, postgres.js's `parameters`, `args` and `types`,
 * PGlite's `queryOptions`, and PostgreSQL's `detail` ("Failing row contains (…)", "Key (…)=(…)"),
 * `where` and `internal_query`. The query text stays: drizzle sends values as parameters.
 */
const QUERY_VALUE_FIELDS = new Set([
  'params',
  'parameters',
  'args',
  'types',
  'queryOptions',
  'detail',
  'where',
  'internal_query',
  'internalQuery',
]);

/**
 * The `err` serializer: type, message, stack and the error's own fields, recursively through
 * `cause`, without the values of a failed query — neither its fields nor drizzle's message, which
 * ends with `params: <values>`. pino's `redact` does not reach into nested causes, hence this.
 */
export function serializeError(value: unknown): unknown {
  return serialize(value, new Set());
}

function serialize(value: unknown, seen: Set<Error>): unknown {
  if (!(value instanceof Error)) return value;
  if (seen.has(value)) return '[circular]';
  seen.add(value);
  const message = value.message.replace(/\n?params: [\s\S]*$/, '');
  const out: Record<string, unknown> = {
    type: value.constructor?.name ?? value.name,
    message,
    stack: value.stack?.replace(value.message, message),
  };
  for (const [key, field] of Object.entries(value)) {
    if (key === 'cause' || key in out || QUERY_VALUE_FIELDS.has(key)) continue;
    out[key] = serialize(field, seen);
  }
  if (value instanceof AggregateError) out.errors = value.errors.map((error) => serialize(error, seen));
  if (value.cause !== undefined) out.cause = serialize(value.cause, seen);
  return out;
}

export function createLogger(options: { level: LogLevel; destination?: DestinationStream }): Logger {
  const pinoOptions = {
    level: options.level,
    base: { service: 'spicegate', version: VERSION },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: { err: serializeError },
    formatters: { level: (label: string) => ({ level: label }) },
    // Workers bundles get pino's browser build, which redacts, formats with asObject and applies
    // the serializers only when told to.
    browser: {
      asObject: true,
      serialize: true,
      formatters: { level: (label: string) => ({ level: label }) },
    },
  };
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

/** A logger that writes nothing, for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
