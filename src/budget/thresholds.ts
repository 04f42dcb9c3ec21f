import type { Logger } from '../observability/logger.js';
import type { BudgetScope } from '../store/contracts.js';
import type { Store } from '../store/typed-store.js';

/**
 * A tenant (or, for `key_monthly`, one key) reached 80 % or 100 % of a budget scope: the prepaid
 * balance (credits used), the tenant monthly cap or the key monthly cap. Emitted once per
 * (tenant or key, scope, threshold, period) across every instance sharing the store.
 */
export interface BudgetThresholdEvent {
  tenantId: string;
  /** The key whose monthly cap this is (`key_monthly` only). */
  keyId?: string;
  scope: BudgetScope;
  thresholdPercent: 80 | 100;
  /** `YYYYMM` for the monthly caps; `credited:<µ>` for the balance (a top-up starts a new period). */
  period: string;
  usedMicro: bigint;
  limitMicro: bigint;
}

export type BudgetThresholdListener = (event: BudgetThresholdEvent) => void | Promise<void>;

/** What a settlement tells the check: whose scopes, which reservation, and the caps in force. */
export interface SettledScopes {
  tenantId: string;
  keyId: string;
  reservationId: string;
  tenantMonthlyCapMicro: bigint | null;
  keyMonthlyCapMicro: bigint | null;
}

/**
 * Budget threshold events: after each settlement that charged something, one store call
 * (lua/budget_event.v1.lua) reads the settled reservation's scopes and marks each threshold
 * reached for the first time with SET NX in the same atomic step. Only the caller that set the
 * marker hears about it, so exactly one instance logs 'budget threshold crossed' and emits to its
 * in-process subscribers, however many requests cross at once on however many instances.
 *
 * "Reached" means at or past, not "moved past by this request": a check that was lost (the store
 * blinked, the process stopped) is made up by the next paid settlement in the same scope.
 *
 * The check runs off the request path: `afterSettlement` returns at once, and its faults are
 * logged, never thrown into the request. `idle()` waits for the checks in flight (tests, shutdown).
 */
export class BudgetThresholds {
  private readonly listeners = new Set<BudgetThresholdListener>();
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Calls `listener` for every event this instance emits; returns the unsubscribe function. */
  subscribe(listener: BudgetThresholdListener): () => void {
    this.listeners.add(listener);
    return () => this.unsubscribe(listener);
  }

  unsubscribe(listener: BudgetThresholdListener): void {
    this.listeners.delete(listener);
  }

  /** Starts the check for a settlement that charged something, and returns at once. */
  afterSettlement(settled: SettledScopes): void {
    const task = this.check(settled)
      .then(() => undefined)
      .catch((error: unknown) =>
        this.log.warn(
          { err: error, tenantId: settled.tenantId, reservationId: settled.reservationId },
          'budget threshold check failed',
        ),
      )
      .finally(() => this.inFlight.delete(task));
    this.inFlight.add(task);
  }

  /** Checks now: logs and emits each threshold reached for the first time; returns them. */
  async check(settled: SettledScopes): Promise<BudgetThresholdEvent[]> {
    const result = await this.store.budgetEvent({
      tenantId: settled.tenantId,
      reservationId: settled.reservationId,
      tenantMonthlyCapMicro: settled.tenantMonthlyCapMicro,
      keyMonthlyCapMicro: settled.keyMonthlyCapMicro,
    });
    if (result.status === 'INVALID_INPUT') throw new Error(`budget_event refused its input: ${result.field}`);
    const events = result.reached.map(
      (reached): BudgetThresholdEvent => ({
        tenantId: settled.tenantId,
        ...(reached.scope === 'key_monthly' ? { keyId: settled.keyId } : {}),
        ...reached,
      }),
    );
    for (const event of events) this.emit(event);
    return events;
  }

  /** Resolves once every check started so far has finished. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  private emit(event: BudgetThresholdEvent): void {
    this.log.info(
      {
        tenantId: event.tenantId,
        ...(event.keyId === undefined ? {} : { keyId: event.keyId }),
        scope: event.scope,
        thresholdPercent: event.thresholdPercent,
        period: event.period,
        usedMicro: event.usedMicro.toString(),
        limitMicro: event.limitMicro.toString(),
      },
      'budget threshold crossed',
    );
    // One subscriber's fault must not keep the event from the others, nor reach the caller.
    for (const listener of this.listeners) {
      try {
        const returned = listener(event);
        if (returned instanceof Promise) {
          returned.catch((error: unknown) => this.logListenerFault(event, error));
        }
      } catch (error) {
        this.logListenerFault(event, error);
      }
    }
  }

  private logListenerFault(event: BudgetThresholdEvent, error: unknown): void {
    this.log.warn(
      { err: error, tenantId: event.tenantId, scope: event.scope, thresholdPercent: event.thresholdPercent },
      'budget threshold subscriber failed',
    );
  }
}
