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

export function createLogger(options: { level: LogLevel; destination?: DestinationStream }): Logger {
  const pinoOptions = {
    level: options.level,
    base: { service: 'spicegate', version: VERSION },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label: string) => ({ level: label }) },
    // Workers bundles get pino's browser build, which only redacts and formats with asObject.
    browser: { asObject: true, formatters: { level: (label: string) => ({ level: label }) } },
  };
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

/** A logger that writes nothing, for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
