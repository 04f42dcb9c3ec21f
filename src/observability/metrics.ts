import { Counter, Gauge, Registry } from './prometheus.js';

/**
 * Prometheus metrics (./prometheus.ts), one registry per app so tests and several apps in one
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
  /** Conservation checks of one tenant, by result (ok, drift, repaired, absent, inconclusive). */
  readonly conservationChecks: Counter<'status'>;
  /** Confirmed drifts between the book and the store, by outcome (reported, repaired, changed). */
  readonly conservationDriftEvents: Counter<'outcome'>;
  /** Their size: |credited drift| + |committed drift| in micro-credits, by outcome. */
  readonly conservationDriftMicro: Counter<'outcome'>;
  /** Background job runs by job and outcome (`ok`, `failed`, `lease_lost`). */
  readonly jobRuns: Counter<'job' | 'outcome'>;
  /** A singleton job found its lease taken over (a paused or slow holder): its writes stopped. */
  readonly jobLeaseLost: Counter<'job'>;
  /** Reservations the reaper released (past their deadline, never settled), and their amount. */
  readonly reaperReleased: Counter;
  readonly reaperReleasedMicro: Counter;
  /** Tenants the reaper could not process in a cycle (store error or the per-tenant timeout). */
  readonly reaperTenantFailures: Counter;
  /** Reaper cycles stopped because more than half their tenants failed; should stay 0. */
  readonly reaperCyclesAborted: Counter;
  /** Idle tenants the reaper dropped from the tenant index. */
  readonly tenantsPruned: Counter;
  /** Payment status reports (IPN, reconciliation, admin) by outcome: processed, duplicate, ignored. */
  readonly paymentReports: Counter<'outcome'>;
  /** Refunds that found the credits already spent; their shortfall in micro-credits. */
  readonly refundShortfallMicro: Counter;
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
    conservationChecks: new Counter({
      name: 'spicegate_conservation_checks_total',
      help: 'Conservation checks of one tenant (book against store), by status',
      labelNames: ['status'],
      registers: [registry],
    }),
    conservationDriftEvents: new Counter({
      name: 'spicegate_conservation_drift_events_total',
      help: 'Confirmed drifts between the book and the store, by outcome (reported, repaired, changed); should stay 0',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    conservationDriftMicro: new Counter({
      name: 'spicegate_conservation_drift_micro_total',
      help: 'Micro-credits of confirmed drift between the book and the store (|credited| + |committed|), by outcome',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    jobRuns: new Counter({
      name: 'spicegate_job_runs_total',
      help: 'Background job runs by job and outcome (ok, failed, lease_lost)',
      labelNames: ['job', 'outcome'],
      registers: [registry],
    }),
    jobLeaseLost: new Counter({
      name: 'spicegate_job_lease_lost_total',
      help: 'Singleton job runs stopped because another holder took the lease (their writes refused)',
      labelNames: ['job'],
      registers: [registry],
    }),
    reaperReleased: new Counter({
      name: 'spicegate_reaper_released_total',
      help: 'Reservations released by the reaper (past their deadline, never settled)',
      registers: [registry],
    }),
    reaperReleasedMicro: new Counter({
      name: 'spicegate_reaper_released_micro_total',
      help: 'Micro-credits the reaper released back to tenants',
      registers: [registry],
    }),
    reaperTenantFailures: new Counter({
      name: 'spicegate_reaper_tenant_failures_total',
      help: 'Tenants the reaper could not process in a cycle (store error or timeout)',
      registers: [registry],
    }),
    reaperCyclesAborted: new Counter({
      name: 'spicegate_reaper_cycles_aborted_total',
      help: 'Reaper cycles stopped because more than half their tenants failed; should stay 0',
      registers: [registry],
    }),
    tenantsPruned: new Counter({
      name: 'spicegate_tenants_pruned_total',
      help: 'Idle tenants removed from the tenant index by the reaper',
      registers: [registry],
    }),
    paymentReports: new Counter({
      name: 'spicegate_payment_reports_total',
      help: 'Payment status reports applied to the state machine, by outcome',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    refundShortfallMicro: new Counter({
      name: 'spicegate_refund_shortfall_micro_total',
      help: 'Micro-credits a refund could not take back because the tenant had spent them',
      registers: [registry],
    }),
  };
}
