import { and, eq } from 'drizzle-orm';
import { creditGrants } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { type AuditActor, appendAudit, SYSTEM_ACTOR } from '../audit/audit.js';
import { MAX_AMOUNT_MICRO } from '../budget/bounds.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { withHydration } from '../ledger/hydrate.js';
import { appendEntry, grantPostings } from '../ledger/journal.js';
import type { Services } from '../services.js';
import { getTenant } from '../tenants/tenants.js';

/** The largest single grant: the engine's own bound on an amount (credit.v2, admit.v4). */
export const MAX_GRANT_MICRO = MAX_AMOUNT_MICRO;

/** The store's alphabet for ids that become part of a key (credit.v2 checks it too). */
const GRANT_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface GrantInput {
  tenantId: string;
  amountMicro: bigint;
  reason: string;
  /** Chosen by the caller to make a retry safe; generated (`grt_…`) when absent. */
  grantId?: string | undefined;
  /** Who grants: the caller's subject, kept on the row. */
  grantedBy: string;
  /** Who grants, as the audit trail names them (pseudonymous). */
  by?: AuditActor | undefined;
}

/** What a grant answers; money as decimal strings. */
export interface Grant {
  grantId: string;
  tenantId: string;
  amountMicro: string;
  /** The tenant's figures right after this call. */
  creditedMicro: string;
  availableMicro: string;
  /** True when this grant id had already raised the balance before this call (a replay). */
  alreadyApplied: boolean;
}

/**
 * An admin grant of credits, idempotent by grant id, in two steps:
 *
 * 1. the `credit_grants` row (insert, or find the row of an earlier call with the same id);
 * 2. the store's balance, raised by `credit.v2`, which applies a grant id at most once (a
 *    balance the store lost is first rebuilt from the book, which already holds this grant).
 *
 * The row is committed first, in one transaction with its `grant` entry in the ledger
 * (docs/ledger.md), so that PostgreSQL — the record balances are repaired from — never lacks a
 * grant the store has applied. If step 2 fails (store down, timed out), the row stays and
 * the call answers 503: calling again with the same grant id finds the row and re-applies the
 * credit, which the store applies once however many attempts reached it. A second call with the
 * same id but another tenant or amount is a different grant under a reused id: 409, nothing
 * changed. The first call's reason is kept.
 *
 * The audit trail gets `credits.grant` with the row, and `credits.reverse` when the row is taken
 * back (the trail is append-only: a refused grant leaves both); a replay or a conflict adds none.
 */
export async function grantCredits(services: Services, input: GrantInput): Promise<Grant> {
  const { tenantId, amountMicro, grantedBy } = input;
  const by = input.by ?? SYSTEM_ACTOR;
  if (amountMicro < 1n || amountMicro > MAX_GRANT_MICRO) {
    throw new AppError('invalid_request', `amountMicro must be between 1 and ${MAX_GRANT_MICRO}`);
  }
  const reason = input.reason.trim();
  if (reason === '') throw new AppError('invalid_request', 'reason must not be empty');
  const grantId = input.grantId ?? newId('grt');
  if (!GRANT_ID.test(grantId)) {
    throw new AppError('invalid_request', 'grantId must be 1-64 letters, digits, "_" or "-"');
  }
  // A minted payment's grant id is its payment id (src/payments): an admin grant cannot take one.
  if (grantId.startsWith('pay_')) {
    throw new AppError('invalid_request', 'grantId must not start with "pay_" (payment ids are reserved)');
  }
  // A refund's debit id (`refund-<payment id>`) shares the store's record of applied ids.
  if (grantId.startsWith('refund-')) {
    throw new AppError('invalid_request', 'grantId must not start with "refund-" (refund ids are reserved)');
  }
  await getTenant(services, tenantId);

  const createdAt = new Date(services.clock.now());
  // The row and its ledger entry commit together: the book never lacks a grant the row records.
  const inserted = await asAdmin(services.db, async (tx) => {
    const [row] = await tx
      .insert(creditGrants)
      .values({ id: grantId, tenantId, amountMicro, reason, grantedBy, createdAt })
      .onConflictDoNothing({ target: creditGrants.id })
      .returning({ id: creditGrants.id });
    if (row === undefined) return undefined;
    const postings = grantPostings(tenantId, amountMicro);
    const entry = await appendEntry(tx, { tenantId, kind: 'grant', reference: grantId, postings, createdAt });
    if (!entry.created) {
      // An earlier attempt under this id was taken back (below), and its reversal is in the book:
      // this attempt grants again.
      await appendEntry(tx, {
        tenantId,
        kind: 'adjustment',
        reference: adjustment(grantId),
        postings,
        createdAt,
      });
    }
    // The reason is free text: it stays out of the trail.
    await appendAudit(tx, {
      by,
      tenantId,
      action: 'credits.grant',
      target: grantId,
      summary: { grantId },
      amountMicro,
      at: createdAt,
    });
    return row;
  });
  if (inserted === undefined) {
    // Grant ids are global: the row in the way may be another tenant's, which only the admin role sees.
    const [existing] = await asAdmin(services.db, (tx) =>
      tx.select().from(creditGrants).where(eq(creditGrants.id, grantId)).limit(1),
    );
    if (existing === undefined) throw new Error(`credit grant ${grantId} vanished after a conflict`);
    if (existing.tenantId !== tenantId || existing.amountMicro !== amountMicro) {
      throw conflict(grantId);
    }
  }

  // An emptied store answers HYDRATE: the balance is rebuilt from the book — which holds this
  // grant since the transaction above — and the grant then answers ALREADY_APPLIED.
  const result = await withHydration(services, tenantId, () =>
    services.store.credit({ tenantId, grantId, amountMicro }),
  );
  if (result.status === 'INVALID_INPUT') {
    // The store refused the grant and changed nothing (the amount would take the balance past
    // its ceiling, or the id was applied by another path with another amount). Take the row
    // back, so PostgreSQL never records a grant the balance does not hold.
    // The book is append-only: the entry is reversed by a compensating one.
    if (inserted !== undefined) {
      await asAdmin(services.db, async (tx) => {
        const deleted = await tx
          .delete(creditGrants)
          .where(and(eq(creditGrants.id, grantId), eq(creditGrants.tenantId, tenantId)))
          .returning({ id: creditGrants.id });
        if (deleted.length === 0) return;
        const at = new Date(services.clock.now());
        await appendEntry(tx, {
          tenantId,
          kind: 'adjustment',
          reference: adjustment(grantId),
          postings: grantPostings(tenantId, -amountMicro),
          createdAt: at,
        });
        await appendAudit(tx, {
          by,
          tenantId,
          action: 'credits.reverse',
          target: grantId,
          // The field the store refused: the amount (the balance's ceiling) or the grant id.
          summary: { grantId, refusedField: result.field },
          amountMicro: -amountMicro,
          at,
        });
      });
    }
    if (result.field === 'grantId') throw conflict(grantId);
    throw new AppError('invalid_request', 'The grant would raise the balance past its maximum', {
      field: result.field,
    });
  }

  // A grant inserted by this call was not applied before it, even when the store, rebuilt from
  // the book meanwhile, already counts it.
  const alreadyApplied = result.status === 'ALREADY_APPLIED' && inserted === undefined;
  services.log.info(
    { tenantId, grantId, amountMicro: amountMicro.toString(), grantedBy, alreadyApplied },
    alreadyApplied ? 'credit grant replayed' : 'credits granted',
  );
  return {
    grantId,
    tenantId,
    amountMicro: amountMicro.toString(),
    creditedMicro: result.creditedMicro.toString(),
    availableMicro: result.availableMicro.toString(),
    alreadyApplied,
  };
}

/** A fresh reference for an adjustment to grant `grantId` (each one is its own event). */
function adjustment(grantId: string): string {
  return `grant:${grantId}:${newId('adj')}`;
}

function conflict(grantId: string): AppError {
  return new AppError(
    'conflict',
    `Grant ${grantId} already exists with another tenant or amount; use a new grantId`,
    { grantId },
  );
}
