import { AppError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type {
  AdmitInput,
  AdmitResult,
  BudgetEventInput,
  BudgetEventResult,
  BudgetScope,
  CancelResult,
  CreditResult,
  DebitResult,
  Dimension,
  FencingResult,
  FinalizeInput,
  FinalizeResult,
  HydrateInput,
  HydrateResult,
  IndexedTenant,
  LeaseResult,
  OutboxAckEntry,
  OutboxAckResult,
  OutboxEntry,
  OutboxReadResult,
  PoolGateInput,
  PoolGateResult,
  ReapResult,
  RebaseInput,
  RebaseResult,
  ScopeRemaining,
  Snapshot,
  SpendUsage,
  TenantMarkResult,
  TenantPageResult,
  TenantPruneResult,
  ThresholdReached,
} from './contracts.js';
import { FencingOverflow, StoreUnavailable } from './errors.js';
import type { Reply, ScriptRunner, StoreEngine } from './port.js';
import { SCRIPTS } from './scripts.generated.js';

/** Ids that become part of a key: no `{`, `}`, `:` or `*`, so one tenant can never name another's keys. */
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const HOLDER = /^[A-Za-z0-9_.:-]{1,128}$/;

export interface ScriptInfo {
  name: string;
  version: number;
  sha1: string;
}

export interface Store {
  readonly engine: StoreEngine;
  ping(): Promise<void>;
  close(): Promise<void>;
  /** Limits and budget reservation in one atomic call; a denial changes nothing. */
  admit(input: AdmitInput): Promise<AdmitResult>;
  /**
   * Settles a reservation exactly once. A settlement (FINALIZED, LATE_FINALIZE or RECOVERED) is
   * appended to the tenant's outbox in the same atomic call (its entry id is in the answer), for
   * PostgreSQL. With `recover`, a charge for a reservation the store lost is still billed. `ack`:
   * outbox entries already written, acknowledged in the same call (no call of their own).
   */
  finalize(input: FinalizeInput): Promise<FinalizeResult>;
  /**
   * Releases a reservation without charge: finalize with cost 0. An id not admitted yet is
   * tombstoned, so its admit, should it still arrive, reserves nothing.
   */
  cancel(input: { tenantId: string; reservationId: string; nowMs: number }): Promise<CancelResult>;
  reap(input: { tenantId: string; nowMs: number; maxCount?: number }): Promise<ReapResult>;
  /**
   * The oldest settlements waiting in a tenant's outbox, at most `count` (1 .. 1000); with
   * `olderThanMs`, only those appended before that time (the store's clock).
   */
  outboxRead(input: { tenantId: string; count: number; olderThanMs?: number }): Promise<OutboxReadResult>;
  /**
   * Deletes written settlements from a tenant's outbox (each named by its id and reservation id);
   * each entry's charge leaves the balance's `outbox` figure once, however many drainers
   * acknowledge it.
   */
  outboxAck(input: { tenantId: string; entries: OutboxAckEntry[] }): Promise<OutboxAckResult>;
  /**
   * The 80 % / 100 % budget thresholds a settled reservation's scopes reached for the first time in
   * their period: each is reported to exactly one caller, across every instance sharing the store.
   */
  budgetEvent(input: BudgetEventInput): Promise<BudgetEventResult>;
  credit(input: { tenantId: string; grantId: string; amountMicro: bigint }): Promise<CreditResult>;
  /**
   * Lowers a tenant's credited balance once per debit id (a refund: what the book took back),
   * never below 0. The id is recorded among the applied grants, which hydrate and rebase rebuild
   * from the book, so a debit the book already holds answers ALREADY_APPLIED after a data loss.
   */
  debit(input: { tenantId: string; debitId: string; amountMicro: bigint }): Promise<DebitResult>;
  /**
   * Writes a tenant's balance rebuilt from the book, only while it is absent from the store (after
   * admit or credit answered HYDRATE): concurrent callers write it once.
   */
  hydrate(input: HydrateInput): Promise<HydrateResult>;
  snapshot(tenantId: string): Promise<Snapshot>;
  /**
   * Sets a tenant's credited and committed to the book's figures (and its applied grant ids to the
   * book's), only while the balance holds exactly the figures expected: the conservation repair.
   */
  rebase(input: RebaseInput): Promise<RebaseResult>;
  poolGate(input: PoolGateInput): Promise<PoolGateResult>;
  /**
   * Takes a singleton job's lease (SET NX PX) with a fencing token that only grows; the holder
   * asking again while it has the lease renews it and keeps its token (RENEWED).
   */
  acquireLease(input: { resource: string; holder: string; ttlMs: number }): Promise<LeaseResult>;
  releaseLease(input: { resource: string; holder: string }): Promise<boolean>;
  /**
   * A named counter that only grows, read or bumped: "something changed, drop your caches"
   * (lua/epoch.v1.lua, which keeps its released name).
   */
  changeCounter(input: { name: string; bump?: boolean }): Promise<number>;
  /**
   * Accepts a write only from the live holder of the newest lease: its token is the one issued
   * last, the lease exists, and no newer token was accepted. The holder may write many times.
   */
  fencingCas(input: { resource: string; fencingToken: number; holder: string }): Promise<FencingResult>;
  /**
   * The tenant index (`{i:tenants}`), so jobs visit every tenant that may hold a reservation
   * without scanning the keyspace. `markTenant` records activity (its time never moves back).
   */
  markTenant(input: { tenantId: string; nowMs: number }): Promise<TenantMarkResult>;
  /** A page of the index after a cursor (a tenant id; none = from the start), at most `limit` (1..1000). */
  listTenants(input: { after?: string; limit: number }): Promise<TenantPageResult>;
  /** Removes a tenant last marked at or before `cutoffMs`; a mark after the cutoff wins (KEPT). */
  pruneTenant(input: { tenantId: string; cutoffMs: number }): Promise<TenantPruneResult>;
}

/** The registered scripts, for /health and admin.system.info. */
export function scriptInfo(): ScriptInfo[] {
  return Object.values(SCRIPTS).map(({ name, version, sha1 }) => ({ name, version, sha1 }));
}

/** The UTC month of a time, `YYYYMM`: the period monthly caps count in. */
export function periodOf(nowMs: number): string {
  const date = new Date(nowMs);
  return `${date.getUTCFullYear()}${String(date.getUTCMonth() + 1).padStart(2, '0')}`;
}

export const tenantKey = (tenantId: string) => `{t:${tenantId}}`;
export const poolKey = (pool: string) => `{p:${pool}}`;
export const leaseKey = (resource: string) => `{l:${resource}}`;
/** The tenant index: a slot of its own (every call names this one key), so it runs on Cluster. */
export const TENANT_INDEX_KEY = '{i:tenants}';

export interface StoreOptions {
  log: Logger;
  metrics?: Metrics;
}

export function createStore(scriptRunner: ScriptRunner, options: StoreOptions): Store {
  const { log, metrics } = options;
  const runner = metrics === undefined ? scriptRunner : countingUnavailable(scriptRunner, metrics);
  const reportDrift = (tenantId: string, driftMicro: bigint, where: string) => {
    if (driftMicro > 0n) {
      log.warn(
        { event: 'ACCOUNTING_DRIFT', tenantId, amountMicro: driftMicro.toString(), where },
        'ACCOUNTING_DRIFT',
      );
      metrics?.accountingDriftMicro.inc({ where }, Number(driftMicro));
      metrics?.accountingDriftEvents.inc({ where });
    }
  };

  /** A finalize, or a cancel (no spend usage: nothing appended to the outbox). */
  const settle = async (
    input: Omit<FinalizeInput, 'spend'> & { spend: SpendUsage | null },
  ): Promise<FinalizeResult | CancelResult> => {
    if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
    const { spend, recover, ack = [] } = input;
    const args = [
      input.reservationId,
      String(input.actualCostMicro),
      String(spend === null ? 0 : spend.promptTokens + spend.completionTokens),
      String(input.nowMs),
      spend?.keyId ?? '',
      String(spend?.promptTokens ?? 0),
      String(spend?.completionTokens ?? 0),
      spend?.free ? '1' : '0',
    ];
    if (recover !== undefined) args.push(recover.pool, periodOf(input.nowMs));
    else if (ack.length > 0) args.push('', '');
    for (const entry of ack) args.push(entry.id, entry.reservationId);
    const reply = await runner.run('budget_finalize', [tenantKey(input.tenantId)], args);
    const result = decodeFinalize(reply);
    if (result.status === 'FINALIZED' || result.status === 'LATE_FINALIZE') {
      reportDrift(input.tenantId, result.driftMicro, 'finalize');
    }
    if (result.status === 'RECOVERED') {
      // A reservation lost with the store's data, billed all the same: should be rare.
      log.warn(
        {
          event: 'RESERVATION_RECOVERED',
          tenantId: input.tenantId,
          reservationId: input.reservationId,
          chargedMicro: result.chargedMicro.toString(),
        },
        'RESERVATION_RECOVERED',
      );
      metrics?.reservationsRecovered.inc();
    }
    if ((result.status === 'LATE_FINALIZE' || result.status === 'RECOVERED') && result.overspend) {
      log.error(
        { event: 'OVERSPEND', tenantId: input.tenantId, reservationId: input.reservationId },
        'OVERSPEND',
      );
      metrics?.overspendEvents.inc();
    }
    return result;
  };

  return {
    engine: runner.engine,
    ping: () => runner.ping(),
    close: () => runner.close(),

    admit: async (input) => {
      for (const field of ['tenantId', 'keyId', 'pool', 'reservationId'] as const) {
        if (!ID.test(input[field])) return { status: 'INVALID_INPUT', field };
      }
      const { limits } = input;
      const reply = await runner.run(
        'admit',
        [tenantKey(input.tenantId)],
        [
          input.tenantId,
          input.keyId,
          input.userId ?? '',
          input.channelId ?? '',
          input.pool,
          input.idempotencyKey ?? '',
          input.reservationId,
          String(input.costMicro),
          String(input.tokenEstimate),
          String(input.nowMs),
          String(input.ttlMs),
          periodOf(input.nowMs),
          limit(limits.tenantRpm),
          limit(limits.userRpm),
          limit(limits.channelRpm),
          limit(limits.keyRpm),
          limit(limits.burstCapacity),
          String(limits.burstRefillPerMinute),
          limit(limits.keyTpd),
          limit(limits.tenantMonthlyCapMicro),
          limit(limits.keyMonthlyCapMicro),
        ],
      );
      return decodeAdmit(reply);
    },

    // A settlement of 0 for an id never admitted is an unknown id to a finalize, as it always was.
    finalize: async (input) => {
      const result = await settle(input);
      return result.status === 'CANCELLED_BEFORE_ADMIT'
        ? { status: 'INVALID_INPUT', field: 'reservationId' }
        : result;
    },
    cancel: async (input) => {
      const result = await settle({ ...input, actualCostMicro: 0n, spend: null });
      // Without `recover`, the script never answers these to a cancel.
      if (result.status === 'RECOVERED' || result.status === 'HYDRATE')
        throw new Error(`unexpected cancel reply: ${result.status}`);
      return result;
    },

    reap: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'budget_reap',
        [tenantKey(input.tenantId)],
        [String(input.nowMs), String(input.maxCount ?? 100)],
      );
      if (reply[0] !== 'REAPED') return invalid(reply);
      const result = {
        status: 'REAPED' as const,
        count: int(reply[1]),
        releasedMicro: big(reply[2]),
        driftMicro: big(reply[3]),
      };
      reportDrift(input.tenantId, result.driftMicro, 'reap');
      return result;
    },

    outboxRead: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'outbox_read',
        [tenantKey(input.tenantId)],
        [String(input.count), ...(input.olderThanMs === undefined ? [] : [String(input.olderThanMs)])],
      );
      if (reply[0] !== 'OUTBOX') return invalid(reply);
      const entries: OutboxEntry[] = [];
      for (let at = 1; at + 9 < reply.length; at += 10) {
        entries.push({
          id: String(reply[at]),
          reservationId: String(reply[at + 1]),
          keyId: String(reply[at + 2]),
          pool: String(reply[at + 3]),
          promptTokens: int(reply[at + 4]),
          completionTokens: int(reply[at + 5]),
          costMicro: big(reply[at + 6]),
          chargedMicro: big(reply[at + 7]),
          free: reply[at + 8] === '1',
          settledAtMs: int(reply[at + 9]),
        });
      }
      return { status: 'OUTBOX', entries };
    },

    outboxAck: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      if (input.entries.length === 0) return { status: 'ACKED', deleted: 0, releasedMicro: 0n };
      const reply = await runner.run(
        'outbox_ack',
        [tenantKey(input.tenantId)],
        input.entries.flatMap((entry) => [entry.id, entry.reservationId]),
      );
      if (reply[0] !== 'ACKED') return invalid(reply);
      return { status: 'ACKED', deleted: int(reply[1]), releasedMicro: big(reply[2]) };
    },

    budgetEvent: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'budget_event',
        [tenantKey(input.tenantId)],
        [input.reservationId, limit(input.tenantMonthlyCapMicro), limit(input.keyMonthlyCapMicro)],
      );
      if (reply[0] !== 'THRESHOLDS') return invalid(reply);
      const reached: ThresholdReached[] = [];
      for (let at = 2; at + 4 < reply.length; at += 5) {
        reached.push({
          scope: String(reply[at]) as BudgetScope,
          thresholdPercent: int(reply[at + 1]) === 100 ? 100 : 80,
          period: String(reply[at + 2]),
          usedMicro: big(reply[at + 3]),
          limitMicro: big(reply[at + 4]),
        });
      }
      return { status: 'THRESHOLDS', reached };
    },

    credit: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'credit',
        [tenantKey(input.tenantId)],
        [input.grantId, String(input.amountMicro)],
      );
      const status = reply[0];
      if (status === 'HYDRATE') return { status };
      if (status !== 'CREDITED' && status !== 'ALREADY_APPLIED') return invalid(reply);
      return { status, creditedMicro: big(reply[1]), availableMicro: big(reply[2]) };
    },

    debit: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'debit',
        [tenantKey(input.tenantId)],
        [input.debitId, String(input.amountMicro)],
      );
      const status = reply[0];
      if (status === 'HYDRATE') return { status };
      if (status !== 'DEBITED' && status !== 'ALREADY_APPLIED') return invalid(reply);
      return { status, creditedMicro: big(reply[1]), availableMicro: big(reply[2]) };
    },

    hydrate: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const { month } = input;
      const reply = await runner.run(
        'hydrate',
        [tenantKey(input.tenantId)],
        [
          String(input.creditedMicro),
          String(input.committedMicro),
          month === undefined ? '' : periodOf(month.nowMs),
          String(month?.tenantCommittedMicro ?? 0n),
          String(input.grants.length),
          ...input.grants.flatMap((grant) => [grant.grantId, String(grant.amountMicro)]),
          ...(month?.keys ?? []).flatMap((key) => [key.keyId, String(key.committedMicro)]),
        ],
      );
      const status = reply[0];
      if (status === 'HYDRATED' || status === 'ALREADY_PRESENT') return { status };
      return invalid(reply);
    },

    snapshot: async (tenantId) => {
      if (!ID.test(tenantId)) throw new AppError('invalid_request', 'Invalid tenantId');
      const reply = await runner.run('snapshot', [tenantKey(tenantId)], []);
      return {
        creditedMicro: big(reply[1]),
        committedMicro: big(reply[2]),
        reservedMicro: big(reply[3]),
        availableMicro: big(reply[4]),
        outboxMicro: big(reply[5]),
        present: int(reply[6]) === 1,
      };
    },

    rebase: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const { expected, book } = input;
      const reply = await runner.run(
        'rebase',
        [tenantKey(input.tenantId)],
        [
          String(expected.creditedMicro),
          String(expected.committedMicro),
          String(expected.outboxMicro),
          String(book.creditedMicro),
          String(book.spentMicro),
          String(book.grants.length),
          ...book.grants.flatMap((grant) => [grant.grantId, String(grant.amountMicro)]),
        ],
      );
      switch (reply[0]) {
        case 'REBASED':
          return {
            status: 'REBASED',
            creditedMicro: big(reply[1]),
            committedMicro: big(reply[2]),
            reservedMicro: big(reply[3]),
            outboxMicro: big(reply[4]),
          };
        case 'CHANGED':
          return {
            status: 'CHANGED',
            creditedMicro: big(reply[1]),
            committedMicro: big(reply[2]),
            outboxMicro: big(reply[3]),
          };
        case 'ABSENT':
          return { status: 'ABSENT' };
        default:
          return invalid(reply);
      }
    },

    poolGate: async (input) => {
      if (!ID.test(input.pool)) return { status: 'INVALID_INPUT', field: 'pool' };
      const reply = await runner.run(
        'pool_gate',
        [poolKey(input.pool)],
        [String(input.tokens), String(input.capacity), String(input.refillPerMinute), String(input.nowMs)],
      );
      if (reply[0] === 'ALLOWED') return { status: 'ALLOWED', remaining: int(reply[1]) };
      if (reply[0] === 'RATE_LIMITED') {
        return {
          status: 'RATE_LIMITED',
          dimension: 'pool',
          limit: int(reply[2]),
          remaining: 0,
          retryAfterMs: int(reply[4]),
          resetAtMs: int(reply[5]),
        };
      }
      return invalid(reply);
    },

    acquireLease: async (input) => {
      if (!ID.test(input.resource)) return { status: 'INVALID_INPUT', field: 'resource' };
      if (!HOLDER.test(input.holder)) return { status: 'INVALID_INPUT', field: 'holder' };
      const reply = await runner.run(
        'lease_acquire',
        [leaseKey(input.resource)],
        [input.holder, String(input.ttlMs)],
      );
      if (reply[0] === 'ACQUIRED' || reply[0] === 'RENEWED')
        return { status: reply[0], fencingToken: int(reply[1]) };
      if (reply[0] === 'HELD') return { status: 'HELD', holder: String(reply[1]), ttlMs: int(reply[2]) };
      if (reply[0] === 'OVERFLOW')
        throw new FencingOverflow(`fencing token of ${input.resource} would pass 2^53 - 1`);
      return invalid(reply);
    },

    releaseLease: async (input) => {
      if (!ID.test(input.resource)) return false;
      const reply = await runner.run('lease_release', [leaseKey(input.resource)], [input.holder]);
      return reply[0] === 'RELEASED';
    },

    changeCounter: async (input) => {
      if (!ID.test(input.name)) throw new AppError('invalid_request', 'Invalid counter name');
      const reply = await runner.run('epoch', [`{g:${input.name}}`], [input.bump ? 'bump' : 'get']);
      return Number(reply[1]);
    },

    fencingCas: async (input) => {
      if (!ID.test(input.resource)) return { status: 'INVALID_INPUT', field: 'resource' };
      if (!HOLDER.test(input.holder)) return { status: 'INVALID_INPUT', field: 'holder' };
      const reply = await runner.run(
        'fencing_cas',
        [leaseKey(input.resource)],
        [String(input.fencingToken), input.holder],
      );
      if (reply[0] === 'OK') return { status: 'OK' };
      if (reply[0] === 'STALE') return { status: 'STALE', lastAccepted: int(reply[1]) };
      if (reply[0] === 'CORRUPT') return { status: 'CORRUPT' };
      return invalid(reply);
    },

    markTenant: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'tenant_index_mark',
        [TENANT_INDEX_KEY],
        [input.tenantId, String(input.nowMs)],
      );
      if (reply[0] === 'MARKED') return { status: 'MARKED', lastActiveMs: int(reply[1]) };
      return invalid(reply);
    },

    listTenants: async (input) => {
      const after = input.after ?? '';
      if (after !== '' && !ID.test(after)) return { status: 'INVALID_INPUT', field: 'after' };
      const reply = await runner.run('tenant_index_page', [TENANT_INDEX_KEY], [after, String(input.limit)]);
      if (reply[0] !== 'PAGE') return invalid(reply);
      const tenants: IndexedTenant[] = [];
      for (let at = 2; at + 1 < reply.length; at += 2) {
        tenants.push({ tenantId: String(reply[at]), lastActiveMs: int(reply[at + 1]) });
      }
      return { status: 'PAGE', tenants, next: reply[1] === '' ? null : String(reply[1]) };
    },

    pruneTenant: async (input) => {
      if (!ID.test(input.tenantId)) return { status: 'INVALID_INPUT', field: 'tenantId' };
      const reply = await runner.run(
        'tenant_index_prune',
        [TENANT_INDEX_KEY],
        [input.tenantId, String(input.cutoffMs)],
      );
      if (reply[0] === 'PRUNED' || reply[0] === 'ABSENT') return { status: reply[0] };
      if (reply[0] === 'KEPT') return { status: 'KEPT', lastActiveMs: int(reply[1]) };
      return invalid(reply);
    },
  };
}

/** Counts the calls that failed because the store did not answer. */
function countingUnavailable(runner: ScriptRunner, metrics: Metrics): ScriptRunner {
  return {
    engine: runner.engine,
    ping: () => runner.ping(),
    close: () => runner.close(),
    run: async (script, keys, args) => {
      try {
        return await runner.run(script, keys, args);
      } catch (error) {
        if (error instanceof StoreUnavailable) metrics.storeUnavailable.inc({ engine: runner.engine });
        throw error;
      }
    },
  };
}

function limit(value: number | bigint | null): string {
  return value === null ? '-1' : String(value);
}

function int(value: Reply[number] | undefined): number {
  return Number(value ?? 0);
}

function big(value: Reply[number] | undefined): bigint {
  return BigInt(value ?? 0);
}

function nullableBig(value: Reply[number] | undefined): bigint | null {
  const n = big(value);
  return n < 0n ? null : n;
}

function invalid(reply: Reply): { status: 'INVALID_INPUT'; field: string } {
  if (reply[0] !== 'INVALID_INPUT') throw new Error(`unexpected script reply: ${String(reply[0])}`);
  return { status: 'INVALID_INPUT', field: String(reply[1]) };
}

function remainingFrom(reply: Reply, at: number): ScopeRemaining {
  return {
    balanceMicro: big(reply[at]),
    tenantMonthlyMicro: nullableBig(reply[at + 1]),
    keyMonthlyMicro: nullableBig(reply[at + 2]),
  };
}

export function decodeAdmit(reply: Reply): AdmitResult {
  switch (reply[0]) {
    case 'ADMITTED':
      return {
        status: 'ADMITTED',
        reservationId: String(reply[1]),
        remaining: remainingFrom(reply, 2),
        tightest:
          reply[5] === ''
            ? null
            : {
                dimension: String(reply[5]) as Dimension,
                limit: int(reply[6]),
                remaining: int(reply[7]),
                resetAtMs: int(reply[8]),
              },
        warning: reply[9] === '' ? null : (String(reply[9]) as BudgetScope),
      };
    case 'RATE_LIMITED':
      return {
        status: 'RATE_LIMITED',
        dimension: String(reply[1]) as Dimension,
        limit: int(reply[2]),
        remaining: 0,
        retryAfterMs: int(reply[4]),
        resetAtMs: int(reply[5]),
      };
    case 'BUDGET_EXCEEDED':
      return {
        status: 'BUDGET_EXCEEDED',
        scope: String(reply[1]) as BudgetScope,
        remainingMicro: big(reply[2]),
        limitMicro: big(reply[3]),
      };
    case 'HYDRATE':
      return { status: 'HYDRATE' };
    case 'CANCELLED':
      return { status: 'CANCELLED' };
    case 'ALREADY_RESERVED':
      return {
        status: 'ALREADY_RESERVED',
        reservationId: String(reply[1]),
        amountMicro: big(reply[2]),
        state: String(reply[3]) as 'open' | 'reaped' | 'finalized' | 'expired',
        remaining: remainingFrom(reply, 4),
      };
    default:
      return invalid(reply);
  }
}

/**
 * What the settling replies carry: the charge (reply[1]), any drift clamped (reply[3]) and the
 * outbox entry appended (reply[4], "" for none).
 */
function settled(reply: Reply): { chargedMicro: bigint; driftMicro: bigint; outboxEntryId: string | null } {
  const entryId = String(reply[4] ?? '');
  return {
    chargedMicro: big(reply[1]),
    driftMicro: big(reply[3]),
    outboxEntryId: entryId === '' ? null : entryId,
  };
}

function decodeFinalize(reply: Reply): FinalizeResult | CancelResult {
  switch (reply[0]) {
    // Each result written out, not spread from `settled` (docs/performance.md, 2026-12-03).
    case 'FINALIZED': {
      const { chargedMicro, driftMicro, outboxEntryId } = settled(reply);
      return { status: 'FINALIZED', chargedMicro, driftMicro, outboxEntryId, releasedMicro: big(reply[2]) };
    }
    case 'LATE_FINALIZE': {
      const { chargedMicro, driftMicro, outboxEntryId } = settled(reply);
      return { status: 'LATE_FINALIZE', chargedMicro, driftMicro, outboxEntryId, overspend: reply[2] === 1 };
    }
    case 'RECOVERED': {
      const { chargedMicro, outboxEntryId } = settled(reply);
      return { status: 'RECOVERED', chargedMicro, overspend: reply[2] === 1, outboxEntryId };
    }
    case 'HYDRATE':
      return { status: 'HYDRATE' };
    case 'ALREADY_FINALIZED':
      return { status: 'ALREADY_FINALIZED', chargedMicro: big(reply[1]) };
    case 'CANCELLED_BEFORE_ADMIT':
      return { status: 'CANCELLED_BEFORE_ADMIT' };
    default:
      return invalid(reply);
  }
}
