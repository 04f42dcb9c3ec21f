/**
 * The typed contracts of the scripts in lua/ (their headers are the reference). Money is bigint
 * micro-credits; counts and times are numbers (all below 2^53).
 */

export type Dimension = 'tenant' | 'user' | 'channel' | 'burst' | 'key_rpm' | 'key_tpd' | 'pool';
export type BudgetScope = 'balance' | 'tenant_monthly' | 'key_monthly';

/** The limits in force for one request; `null` means not limited. */
export interface AdmitLimits {
  tenantRpm: number | null;
  userRpm: number | null;
  channelRpm: number | null;
  keyRpm: number | null;
  /** Token bucket per user (per tenant when the request has no user): capacity and refill. */
  burstCapacity: number | null;
  burstRefillPerMinute: number;
  keyTpd: number | null;
  tenantMonthlyCapMicro: bigint | null;
  keyMonthlyCapMicro: bigint | null;
}

export interface AdmitInput {
  tenantId: string;
  /**
   * The subject of the key_rpm, key_tpd and key_monthly counters, recorded in the reservation (so
   * finalize corrects the same key_tpd counter): the API key's id, or one id shared by keys.
   */
  keyId: string;
  userId?: string;
  channelId?: string;
  pool: string;
  idempotencyKey?: string;
  /** Chosen by the caller (newId('res')), so a retry after a timeout can find it. */
  reservationId: string;
  /** The reservation; 0 admits a free (sandbox) request: rate-limited, but no budget scope applies. */
  costMicro: bigint;
  tokenEstimate: number;
  nowMs: number;
  ttlMs: number;
  limits: AdmitLimits;
}

export interface ScopeRemaining {
  balanceMicro: bigint;
  /** null: the scope has no cap. */
  tenantMonthlyMicro: bigint | null;
  keyMonthlyMicro: bigint | null;
}

export type AdmitResult =
  | {
      status: 'ADMITTED';
      reservationId: string;
      remaining: ScopeRemaining;
      /** The dimension closest to its limit after this request, or null when none is limited. */
      tightest: { dimension: Dimension; limit: number; remaining: number; resetAtMs: number } | null;
      /** The first scope at or past 80 % after this reservation. */
      warning: BudgetScope | null;
    }
  | {
      status: 'RATE_LIMITED';
      dimension: Dimension;
      limit: number;
      remaining: 0;
      retryAfterMs: number;
      resetAtMs: number;
    }
  | { status: 'BUDGET_EXCEEDED'; scope: BudgetScope; remainingMicro: bigint; limitMicro: bigint }
  | {
      status: 'ALREADY_RESERVED';
      reservationId: string;
      amountMicro: bigint;
      state: 'open' | 'reaped' | 'finalized' | 'expired';
      remaining: ScopeRemaining;
    }
  /** The tenant's balance is absent from the store: hydrate it from the book, then admit again. */
  | { status: 'HYDRATE' }
  /** This reservation id was cancelled before the admit ran (budget_finalize's tombstone): nothing reserved. */
  | { status: 'CANCELLED' }
  | { status: 'INVALID_INPUT'; field: string };

export interface FinalizeInput {
  tenantId: string;
  reservationId: string;
  /**
   * What the request cost: charged up to the reservation. For a free (sandbox) request, its
   * notional cost: it reserved 0, so it is charged 0 and its spend row records this figure.
   */
  actualCostMicro: bigint;
  nowMs: number;
  /** What the spend row needs beyond the reservation: appended to the tenant's outbox with the settlement. */
  spend: SpendUsage;
  /**
   * Recovery mode (the request path and the settlement job only): a charge above 0 for a
   * reservation the store no longer knows (lost with its data) is still billed — RECOVERED, after
   * HYDRATE while the tenant's balance is absent. The pool is the one the request was admitted to.
   */
  recover?: { pool: string };
  /**
   * Outbox entries of this tenant already written to PostgreSQL, acknowledged in the same call
   * (outboxAck's rules) unless the answer is INVALID_INPUT or HYDRATE; at most 1,000.
   */
  ack?: OutboxAckEntry[];
}

/** A settled request's spend-row figures that the reservation does not hold. */
export interface SpendUsage {
  /** The API key (the reservation holds the limit subject, shared by a tenant's sandbox keys). */
  keyId: string;
  promptTokens: number;
  completionTokens: number;
  /** A sandbox request: metered at its notional cost, charged nothing. */
  free: boolean;
}

/**
 * `outboxEntryId`: the tenant's outbox entry this settlement appended (null for a cancel, which
 * appends none), for the process that settled to acknowledge once it wrote the row itself.
 */
export type FinalizeResult =
  | {
      status: 'FINALIZED';
      chargedMicro: bigint;
      releasedMicro: bigint;
      driftMicro: bigint;
      outboxEntryId: string | null;
    }
  | {
      status: 'LATE_FINALIZE';
      chargedMicro: bigint;
      overspend: boolean;
      driftMicro: bigint;
      outboxEntryId: string | null;
    }
  /**
   * Recovery mode: the reservation was unknown (lost with the store's data) and the charge was
   * committed all the same, once (a repeat answers ALREADY_FINALIZED).
   */
  | { status: 'RECOVERED'; chargedMicro: bigint; overspend: boolean; outboxEntryId: string | null }
  /** Recovery mode: the reservation is unknown and the tenant's balance absent: hydrate, then again. */
  | { status: 'HYDRATE' }
  | { status: 'ALREADY_FINALIZED'; chargedMicro: bigint }
  | { status: 'INVALID_INPUT'; field: string };

/**
 * A settlement waiting in a tenant's outbox (budget_finalize v4): what its spend row and its `spend`
 * journal entry need.
 */
export interface OutboxEntry {
  /** The stream entry's id (`<ms>-<seq>`), for outbox_ack. */
  id: string;
  reservationId: string;
  keyId: string;
  pool: string;
  promptTokens: number;
  completionTokens: number;
  /** What the spend row records: the charge, or a free request's notional cost. */
  costMicro: bigint;
  /** What the store charged: the amount of the journal entry (none for 0). */
  chargedMicro: bigint;
  free: boolean;
  settledAtMs: number;
}

export type OutboxReadResult =
  | { status: 'OUTBOX'; entries: OutboxEntry[] }
  | { status: 'INVALID_INPUT'; field: string };

/**
 * An outbox entry to acknowledge: its id and the reservation it settled. Both must match, so an id
 * the stream issued again after a data loss never deletes another settlement.
 */
export interface OutboxAckEntry {
  id: string;
  reservationId: string;
}

export type OutboxAckResult =
  /** `deleted`: entries this call removed (another drainer may have removed the rest). */
  { status: 'ACKED'; deleted: number; releasedMicro: bigint } | { status: 'INVALID_INPUT'; field: string };

export type CancelResult =
  | Exclude<FinalizeResult, { status: 'RECOVERED' | 'HYDRATE' }>
  /** An id not admitted (yet): its tombstone makes a later admit of it answer CANCELLED. */
  | { status: 'CANCELLED_BEFORE_ADMIT' };

export interface BudgetEventInput {
  tenantId: string;
  /** A settled reservation: its period (month) and key are the ones checked. */
  reservationId: string;
  tenantMonthlyCapMicro: bigint | null;
  keyMonthlyCapMicro: bigint | null;
}

/** A budget threshold a scope reached for the first time in its period (lua/budget_event.v1.lua). */
export interface ThresholdReached {
  scope: BudgetScope;
  thresholdPercent: 80 | 100;
  /** `YYYYMM` for the monthly caps; `credited:<µ>` for the balance (a top-up starts a new period). */
  period: string;
  usedMicro: bigint;
  limitMicro: bigint;
}

export type BudgetEventResult =
  | { status: 'THRESHOLDS'; reached: ThresholdReached[] }
  | { status: 'INVALID_INPUT'; field: string };

export type ReapResult =
  | { status: 'REAPED'; count: number; releasedMicro: bigint; driftMicro: bigint }
  | { status: 'INVALID_INPUT'; field: string };

export type CreditResult =
  | { status: 'CREDITED' | 'ALREADY_APPLIED'; creditedMicro: bigint; availableMicro: bigint }
  /** The tenant's balance is absent from the store: hydrate it from the book, then credit again. */
  | { status: 'HYDRATE' }
  | { status: 'INVALID_INPUT'; field: string };

/**
 * lua/debit.v1.lua. availableMicro may be negative: the debit stands over open reservations and
 * settled charges, and a negative available only stops new admits.
 */
export type DebitResult =
  | { status: 'DEBITED' | 'ALREADY_APPLIED'; creditedMicro: bigint; availableMicro: bigint }
  /** The tenant's balance is absent from the store: hydrate it from the book, then debit again. */
  | { status: 'HYDRATE' }
  /** `amountMicro` also when credited would go below 0; `debitId` when applied with another amount. */
  | { status: 'INVALID_INPUT'; field: string };

/** A tenant's figures in the book (PostgreSQL), written to the store by hydrate. */
export interface HydrateInput {
  tenantId: string;
  creditedMicro: bigint;
  committedMicro: bigint;
  /**
   * The grants counted in creditedMicro, and the debits (refunds) taken off it: the store records
   * them all as applied.
   */
  grants: { grantId: string; amountMicro: bigint }[];
  /** The monthly cap counters of one month, written where absent; none without it. */
  month?: {
    /** The month is the UTC month of nowMs. */
    nowMs: number;
    /** The tenant's settled charges in that month. */
    tenantCommittedMicro: bigint;
    /** Each API key's settled charges in that month (keys without any may be left out). */
    keys: { keyId: string; committedMicro: bigint }[];
  };
}

export type HydrateResult =
  | { status: 'HYDRATED' | 'ALREADY_PRESENT' }
  | { status: 'INVALID_INPUT'; field: string };

export interface Snapshot {
  creditedMicro: bigint;
  committedMicro: bigint;
  reservedMicro: bigint;
  availableMicro: bigint;
  /** Charges settled in the store that the outbox drain has not yet written to the book (part of committed). */
  outboxMicro: bigint;
  /** False when the store holds no balance for the tenant (every figure 0): hydration rebuilds it. */
  present: boolean;
}

/**
 * The conservation check's repair (lua/rebase.v1.lua): the book's figures, written only while the
 * balance still holds the figures the check read.
 */
export interface RebaseInput {
  tenantId: string;
  /** The figures the check read (compare-and-set); reserved is not compared, it is kept. */
  expected: { creditedMicro: bigint; committedMicro: bigint; outboxMicro: bigint };
  /** The book's figures: committed becomes spent + the outbox. */
  book: { creditedMicro: bigint; spentMicro: bigint; grants: { grantId: string; amountMicro: bigint }[] };
}

export type RebaseResult =
  | {
      status: 'REBASED';
      creditedMicro: bigint;
      committedMicro: bigint;
      reservedMicro: bigint;
      outboxMicro: bigint;
    }
  /** The balance no longer holds the figures expected: nothing written. */
  | { status: 'CHANGED'; creditedMicro: bigint; committedMicro: bigint; outboxMicro: bigint }
  /** The balance is absent from the store (hydration rebuilds it): nothing written. */
  | { status: 'ABSENT' }
  | { status: 'INVALID_INPUT'; field: string };

export interface PoolGateInput {
  pool: string;
  tokens: number;
  capacity: number;
  refillPerMinute: number;
  nowMs: number;
}

export type PoolGateResult =
  | { status: 'ALLOWED'; remaining: number }
  | {
      status: 'RATE_LIMITED';
      dimension: 'pool';
      limit: number;
      remaining: 0;
      retryAfterMs: number;
      resetAtMs: number;
    }
  | { status: 'INVALID_INPUT'; field: string };

export type LeaseResult =
  /** A new lease with a new token; RENEWED: the holder already had it (TTL restarted, same token). */
  | { status: 'ACQUIRED' | 'RENEWED'; fencingToken: number }
  | { status: 'HELD'; holder: string; ttlMs: number }
  | { status: 'INVALID_INPUT'; field: string };

export type FencingResult =
  | { status: 'OK' }
  | { status: 'STALE'; lastAccepted: number }
  | { status: 'CORRUPT' }
  | { status: 'INVALID_INPUT'; field: string };

/** A tenant in the tenant index: when it was last marked active (ms since the epoch). */
export interface IndexedTenant {
  tenantId: string;
  lastActiveMs: number;
}

export type TenantMarkResult =
  | { status: 'MARKED'; lastActiveMs: number }
  | { status: 'INVALID_INPUT'; field: string };

/** One page of the tenant index, in byte order of tenant id; `next` is null after the last page. */
export type TenantPageResult =
  | { status: 'PAGE'; tenants: IndexedTenant[]; next: string | null }
  | { status: 'INVALID_INPUT'; field: string };

export type TenantPruneResult =
  | { status: 'PRUNED' | 'ABSENT' }
  /** Marked after the cutoff (a request came in): it stays. */
  | { status: 'KEPT'; lastActiveMs: number }
  | { status: 'INVALID_INPUT'; field: string };
