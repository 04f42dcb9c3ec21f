import { type ConservationOutcome, conservationChecks } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { AppError } from '../errors.js';
import type { Services } from '../services.js';
import type { RebaseResult, Snapshot } from '../store/contracts.js';
import { bookFigures } from './hydrate.js';

/**
 * The conservation check (docs/ledger.md "Conservation"): a tenant's balance in the store against
 * the book, and the rule "the book wins". Plain functions, run by the conservation job
 * (`checkTenants`) and by admin.conservation (`conservationStatus`); no timers of their own but
 * the confirmation wait, so they run in a scheduled Worker as well.
 */

/**
 * - `ok`: the store agrees with the book.
 * - `drift`: a confirmed drift, not repaired (not asked to, or the balance moved before the repair).
 * - `repaired`: a confirmed drift, and the store now holds the book's figures.
 * - `absent`: the store holds no balance for the tenant: nothing to compare (hydration rebuilds it).
 * - `inconclusive`: the figures kept moving (live traffic) or a drift seen once was not seen again.
 * - `failed`: the check threw (logged); `checkTenants` only.
 */
export type ConservationStatus = 'ok' | 'drift' | 'repaired' | 'absent' | 'inconclusive' | 'failed';

export interface ConservationResult {
  tenantId: string;
  status: ConservationStatus;
  /**
   * What the store lets the tenant spend beyond what the book holds: (store credited − book
   * credited) − ((store committed − outbox) − book spent). Signed; 0 unless `drift` or `repaired`
   * (a drift of credited and committed by the same amount is a drift of 0 here, still `drift`).
   */
  driftMicro: bigint;
  checkedAtMs: number;
}

export interface ConservationOptions {
  /** Write the book's figures to the store when a drift is confirmed. */
  repair: boolean;
  /**
   * Called right before the repair's store write (the job's fencing check); a throw aborts the
   * whole run and is rethrown as is.
   */
  beforeWrite?: () => Promise<void>;
  /** How long a drift must persist, unchanged, to be confirmed (default CONFIRM_AFTER_MS). */
  confirmAfterMs?: number;
}

// 2 s: a settled charge is counted in the store's `outbox` until it is in the book; what is left
// is a write-then-acknowledge window of milliseconds, or a grant between its commit and its credit,
// so a difference still there after 2 s is not a charge or a grant on its way.
export const CONFIRM_AFTER_MS = 2_000;
// A read whose two snapshots differ (a settlement or grant landed in between) is tried again at
// once, at most this many times in all: a busy tenant is left for the next run.
const READ_ATTEMPTS = 3;

interface BookSide {
  creditedMicro: bigint;
  spentMicro: bigint;
  grants: { grantId: string; amountMicro: bigint }[];
}

/** One consistent read: store, book, store again, with both store figures the same. */
interface Reading {
  store: Snapshot;
  book: BookSide;
  /** Store credited − book credited. */
  creditedDriftMicro: bigint;
  /** (Store committed − outbox) − book spent. */
  committedDriftMicro: bigint;
}

type Look = { kind: 'absent' } | { kind: 'moving' } | { kind: 'read'; reading: Reading };

/** A throw from `beforeWrite`: carried past the per-tenant error handling, then rethrown as is. */
class RepairAborted extends Error {
  constructor(readonly reason: unknown) {
    super('conservation repair aborted by beforeWrite');
  }
}

/**
 * Checks one tenant: store against book, confirmed after `confirmAfterMs`, repaired when asked.
 * Throws what the store or the database throws, and AppError not_found for an unknown tenant.
 */
export async function checkTenant(
  services: Services,
  tenantId: string,
  options: ConservationOptions,
): Promise<ConservationResult> {
  const first = await firstLook(services, tenantId);
  if (first.kind === 'done') return counted(services, first.result);
  await wait(options.confirmAfterMs ?? CONFIRM_AFTER_MS);
  try {
    return counted(services, await confirm(services, tenantId, first.reading, options));
  } catch (error) {
    throw error instanceof RepairAborted ? error.reason : error;
  }
}

/**
 * Checks each tenant (the conservation job): a first read of all, one confirmation wait, then a
 * second read of those that showed a drift. A tenant whose check throws is logged and reported
 * `failed`; a throw from `beforeWrite` ends the run.
 */
export async function checkTenants(
  services: Services,
  tenantIds: readonly string[],
  options: ConservationOptions,
): Promise<ConservationResult[]> {
  const results = new Map<string, ConservationResult>();
  const suspects: { tenantId: string; reading: Reading }[] = [];
  for (const tenantId of tenantIds) {
    try {
      const first = await firstLook(services, tenantId);
      if (first.kind === 'done') results.set(tenantId, counted(services, first.result));
      else suspects.push({ tenantId, reading: first.reading });
    } catch (error) {
      results.set(tenantId, failed(services, tenantId, error));
    }
  }
  if (suspects.length > 0) await wait(options.confirmAfterMs ?? CONFIRM_AFTER_MS);
  for (const { tenantId, reading } of suspects) {
    try {
      results.set(tenantId, counted(services, await confirm(services, tenantId, reading, options)));
    } catch (error) {
      if (error instanceof RepairAborted) throw error.reason;
      results.set(tenantId, failed(services, tenantId, error));
    }
  }
  return tenantIds.map((tenantId) => results.get(tenantId) ?? failed(services, tenantId, undefined));
}

/** What admin.conservation answers: a live check that repairs nothing; money as a decimal string. */
export interface ConservationStatusView {
  status: Exclude<ConservationStatus, 'failed'>;
  driftMicro: string;
  checkedAt: string;
}

/**
 * A live check of one tenant, without repair (a confirmed drift is logged, counted and recorded as
 * `reported`); 404 for an unknown tenant.
 */
export async function conservationStatus(
  services: Services,
  tenantId: string,
): Promise<ConservationStatusView> {
  const result = await checkTenant(services, tenantId, { repair: false });
  if (result.status === 'failed') throw new Error('a single check never reports failed');
  return {
    status: result.status,
    driftMicro: result.driftMicro.toString(),
    checkedAt: new Date(result.checkedAtMs).toISOString(),
  };
}

/** The first stable read: a result already (ok, absent, inconclusive), or a drift to confirm. */
async function firstLook(
  services: Services,
  tenantId: string,
): Promise<{ kind: 'done'; result: ConservationResult } | { kind: 'suspect'; reading: Reading }> {
  const look = await stableRead(services, tenantId);
  if (look.kind === 'absent') return { kind: 'done', result: result(services, tenantId, 'absent') };
  if (look.kind === 'moving') return { kind: 'done', result: result(services, tenantId, 'inconclusive') };
  if (!drifts(look.reading)) return { kind: 'done', result: result(services, tenantId, 'ok') };
  return { kind: 'suspect', reading: look.reading };
}

/**
 * The second read, after the wait. A drift is confirmed only when the store's figures are exactly
 * those of the first read and the book's too: nothing settled or was granted in between, and
 * what the first read saw was not a charge or a grant on its way (it would have arrived).
 */
async function confirm(
  services: Services,
  tenantId: string,
  first: Reading,
  options: ConservationOptions,
): Promise<ConservationResult> {
  const look = await stableRead(services, tenantId);
  if (look.kind === 'absent') return result(services, tenantId, 'absent');
  if (look.kind === 'moving') return unconfirmed(services, tenantId, first);
  const second = look.reading;
  if (!drifts(second)) return result(services, tenantId, 'ok');
  const unchanged =
    sameFigures(first.store, second.store) &&
    first.creditedDriftMicro === second.creditedDriftMicro &&
    first.committedDriftMicro === second.committedDriftMicro;
  if (!unchanged) return unconfirmed(services, tenantId, first);
  // The book ahead of the store by no more than the outbox may be charges the drain has written to
  // the book but not yet acknowledged in the store (a drain stopped between the two): left until
  // the outbox is drained, or the repair would count them twice.
  const drainWindow = -second.committedDriftMicro;
  if (drainWindow > 0n && drainWindow <= second.store.outboxMicro) {
    return unconfirmed(services, tenantId, first);
  }
  return settleDrift(services, tenantId, second, options);
}

/** A confirmed drift: logged, counted, repaired when asked ("the book wins"), recorded. */
async function settleDrift(
  services: Services,
  tenantId: string,
  reading: Reading,
  options: ConservationOptions,
): Promise<ConservationResult> {
  const { store, book } = reading;
  const driftMicro = reading.creditedDriftMicro - reading.committedDriftMicro;
  const figures = {
    tenantId,
    driftMicro: driftMicro.toString(),
    creditedDriftMicro: reading.creditedDriftMicro.toString(),
    committedDriftMicro: reading.committedDriftMicro.toString(),
    store: {
      creditedMicro: store.creditedMicro.toString(),
      committedMicro: store.committedMicro.toString(),
      outboxMicro: store.outboxMicro.toString(),
      reservedMicro: store.reservedMicro.toString(),
    },
    book: { creditedMicro: book.creditedMicro.toString(), spentMicro: book.spentMicro.toString() },
  };
  services.log.error({ event: 'ACCOUNTING_DRIFT', where: 'conservation', ...figures }, 'ACCOUNTING_DRIFT');

  let repair: RebaseResult | undefined;
  if (options.repair) {
    try {
      await options.beforeWrite?.();
    } catch (error) {
      throw new RepairAborted(error);
    }
    repair = await services.store.rebase({
      tenantId,
      expected: {
        creditedMicro: store.creditedMicro,
        committedMicro: store.committedMicro,
        outboxMicro: store.outboxMicro,
      },
      book,
    });
    if (repair.status === 'INVALID_INPUT') {
      throw new Error(`rebase refused the book's figures of ${tenantId}: ${repair.field}`);
    }
    // Emptied since it was read: nothing to repair, hydration writes the book's figures.
    if (repair.status === 'ABSENT') return result(services, tenantId, 'absent');
  }

  const outcome: ConservationOutcome =
    repair === undefined ? 'reported' : repair.status === 'REBASED' ? 'repaired' : 'changed';
  const after = repair?.status === 'REBASED' ? repair : undefined;
  if (after !== undefined) {
    services.log.warn(
      {
        event: 'CONSERVATION_REPAIRED',
        ...figures,
        after: {
          creditedMicro: after.creditedMicro.toString(),
          committedMicro: after.committedMicro.toString(),
          outboxMicro: after.outboxMicro.toString(),
          reservedMicro: after.reservedMicro.toString(),
        },
      },
      'store balance repaired from the book',
    );
  } else if (outcome === 'changed') {
    services.log.warn({ tenantId }, 'conservation repair skipped: the balance moved since it was read');
  }
  services.metrics.conservationDriftEvents.inc({ outcome });
  services.metrics.conservationDriftMicro.inc(
    { outcome },
    Number(abs(reading.creditedDriftMicro) + abs(reading.committedDriftMicro)),
  );

  const checkedAtMs = services.clock.now();
  try {
    const record = {
      tenantId,
      checkedAt: new Date(checkedAtMs),
      outcome,
      driftMicro,
      creditedDriftMicro: reading.creditedDriftMicro,
      committedDriftMicro: reading.committedDriftMicro,
      beforeCreditedMicro: store.creditedMicro,
      beforeCommittedMicro: store.committedMicro,
      beforeOutboxMicro: store.outboxMicro,
      beforeReservedMicro: store.reservedMicro,
      bookCreditedMicro: book.creditedMicro,
      bookSpentMicro: book.spentMicro,
      afterCreditedMicro: after?.creditedMicro ?? null,
      afterCommittedMicro: after?.committedMicro ?? null,
      afterOutboxMicro: after?.outboxMicro ?? null,
      afterReservedMicro: after?.reservedMicro ?? null,
    };
    await asAdmin(services.db, (tx) => tx.insert(conservationChecks).values(record));
  } catch (error) {
    // The store write (if any) stands; the log lines above hold every figure of the record.
    services.log.error({ err: error, tenantId, outcome }, 'conservation check not recorded');
  }
  return { tenantId, status: outcome === 'repaired' ? 'repaired' : 'drift', driftMicro, checkedAtMs };
}

/** Store, book, store: a reading when both store figures agree, else `moving` (after a few tries). */
async function stableRead(services: Services, tenantId: string): Promise<Look> {
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt += 1) {
    const before = await services.store.snapshot(tenantId);
    const figures = await bookFigures(services, tenantId, services.clock.now());
    if (figures === undefined) throw new AppError('not_found', `No tenant ${tenantId}`);
    const after = await services.store.snapshot(tenantId);
    if (!before.present || !after.present) return { kind: 'absent' };
    if (!sameFigures(before, after)) continue;
    const book = {
      creditedMicro: figures.creditedMicro,
      spentMicro: figures.committedMicro,
      grants: figures.grants,
    };
    return {
      kind: 'read',
      reading: {
        store: after,
        book,
        creditedDriftMicro: after.creditedMicro - book.creditedMicro,
        committedDriftMicro: after.committedMicro - after.outboxMicro - book.spentMicro,
      },
    };
  }
  return { kind: 'moving' };
}

/** The figures a settlement, a grant or a drain moves; reserved moves with every admit and is not compared. */
function sameFigures(a: Snapshot, b: Snapshot): boolean {
  return (
    a.creditedMicro === b.creditedMicro &&
    a.committedMicro === b.committedMicro &&
    a.outboxMicro === b.outboxMicro
  );
}

function drifts(reading: Reading): boolean {
  return reading.creditedDriftMicro !== 0n || reading.committedDriftMicro !== 0n;
}

function unconfirmed(services: Services, tenantId: string, first: Reading): ConservationResult {
  services.log.debug(
    {
      tenantId,
      creditedDriftMicro: first.creditedDriftMicro.toString(),
      committedDriftMicro: first.committedDriftMicro.toString(),
    },
    'conservation: a difference seen once was not confirmed',
  );
  return result(services, tenantId, 'inconclusive');
}

function result(
  services: Services,
  tenantId: string,
  status: Exclude<ConservationStatus, 'drift' | 'repaired'>,
): ConservationResult {
  return { tenantId, status, driftMicro: 0n, checkedAtMs: services.clock.now() };
}

function failed(services: Services, tenantId: string, error: unknown): ConservationResult {
  services.log.error({ err: error, tenantId }, 'conservation check failed');
  return counted(services, result(services, tenantId, 'failed'));
}

function counted(services: Services, outcome: ConservationResult): ConservationResult {
  services.metrics.conservationChecks.inc({ status: outcome.status });
  return outcome;
}

function abs(value: bigint): bigint {
  return value < 0n ? -value : value;
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
