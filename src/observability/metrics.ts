import { Counter, Gauge, Registry } from 'prom-client';

/**
 * Prometheus metrics (prom-client), one registry per app so tests and several apps in one
 * process never share counters. `GET /metrics` renders it.
 */
export interface Metrics {
  readonly registry: Registry;
  /** `reserved` would have gone negative and was clamped: the amount, by where it was found. */
  readonly accountingDriftMicro: Counter<'where'>;
  readonly accountingDriftEvents: Counter<'where'>;
  /** A late finalize (after the reaper) took a tenant past its credit. */
  readonly overspendEvents: Counter;
  /** An upstream reported more tokens than were reserved (charged up to the reservation). */
  readonly underReservedEvents: Counter;
  readonly storeUnavailable: Counter<'engine'>;
  /** Unsettled spend rows the store refused to settle, parked for an operator; should stay 0. */
  readonly spendParked: Counter;
  /** Charges for reservations the store had lost (with its data), billed all the same (RECOVERED). */
  readonly reservationsRecovered: Counter;
  /** Age of the active signing key; alert well before SIGNING_KEY_MAX_AGE_DAYS. */
  readonly signingKeyAgeSeconds: Gauge;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  return {
    registry,
    accountingDriftMicro: new Counter({
      name: 'spicegate_accounting_drift_micro_total',
      help: 'Micro-credits by which reserved would have gone negative (clamped to 0); should stay 0',
      labelNames: ['where'],
      registers: [registry],
    }),
    accountingDriftEvents: new Counter({
      name: 'spicegate_accounting_drift_events_total',
      help: 'Settlements that found reserved below the reservation amount; should stay 0',
      labelNames: ['where'],
      registers: [registry],
    }),
    overspendEvents: new Counter({
      name: 'spicegate_overspend_events_total',
      help: 'Late finalizes (after a reap) that left committed + reserved above credited',
      registers: [registry],
    }),
    underReservedEvents: new Counter({
      name: 'spicegate_under_reserved_total',
      help: 'Requests whose upstream reported more tokens than were reserved (charged the reservation); should stay 0',
      registers: [registry],
    }),
    storeUnavailable: new Counter({
      name: 'spicegate_store_unavailable_total',
      help: 'Store calls that failed because the store did not answer in time',
      labelNames: ['engine'],
      registers: [registry],
    }),
    spendParked: new Counter({
      name: 'spicegate_spend_parked_total',
      help: 'Unsettled spend rows the store refused to settle (parked with their reason, not retried); should stay 0',
      registers: [registry],
    }),
    reservationsRecovered: new Counter({
      name: 'spicegate_reservations_recovered_total',
      help: 'Settlements of reservations the store had lost with its data, charged all the same (RECOVERED)',
      registers: [registry],
    }),
    signingKeyAgeSeconds: new Gauge({
      name: 'spicegate_signing_key_age_seconds',
      help: 'Age of the active signing key',
      registers: [registry],
    }),
  };
}
