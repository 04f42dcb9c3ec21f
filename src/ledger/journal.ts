import { eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { type JournalKind, journalEntries, postings } from '../../db/schema/index.js';

/**
 * The book's accounts (docs/ledger.md). A balance is the sum of its postings; a tenant's
 * `available` holds what they can still spend, `spent` what they have spent, and
 * `platform:grants_issued` the negative of every credit granted, so the book always sums to zero.
 */
export const accounts = {
  available: (tenantId: string) => `tenant:${tenantId}:available`,
  spent: (tenantId: string) => `tenant:${tenantId}:spent`,
  grantsIssued: 'platform:grants_issued',
  /** The negative of every credit minted by a payment, less what refunds took back. */
  paymentsReceived: 'platform:payments_received',
} as const;

export interface Posting {
  account: string;
  amountMicro: bigint;
}

export interface EntryInput {
  tenantId: string;
  kind: JournalKind;
  /** The event's own id (grant id, reservation id, payment id): one entry per (kind, reference). */
  reference: string;
  postings: Posting[];
  createdAt?: Date;
}

/** A grant of `amountMicro` to a tenant's available credits. */
export function grantPostings(tenantId: string, amountMicro: bigint): Posting[] {
  return [
    { account: accounts.available(tenantId), amountMicro },
    { account: accounts.grantsIssued, amountMicro: -amountMicro },
  ];
}

/** A payment's mint (a refund: negative): the pack's credits from the platform's payments account to the tenant's available. */
export function paymentPostings(tenantId: string, amountMicro: bigint): Posting[] {
  return [
    { account: accounts.available(tenantId), amountMicro },
    { account: accounts.paymentsReceived, amountMicro: -amountMicro },
  ];
}

/**
 * A settled charge of `costMicro` (> 0): from available to spent. The spend statement in
 * outbox.ts (`writeSettledSpend`) writes the same two postings in SQL; keep them in step.
 */
export function spendPostings(tenantId: string, costMicro: bigint): Posting[] {
  return [
    { account: accounts.available(tenantId), amountMicro: -costMicro },
    { account: accounts.spent(tenantId), amountMicro: costMicro },
  ];
}

/**
 * Appends one entry and its postings inside the caller's transaction (`tx`), idempotent by
 * (kind, reference): when that entry already exists nothing is added and `created` is false.
 * The database checks at commit that the postings sum to zero.
 */
export async function appendEntry(
  tx: Db,
  entry: EntryInput,
): Promise<{ created: true; entryId: bigint } | { created: false }> {
  if (entry.postings.length === 0) throw new Error('a journal entry needs postings');
  const [inserted] = await tx
    .insert(journalEntries)
    .values({
      tenantId: entry.tenantId,
      kind: entry.kind,
      reference: entry.reference,
      ...(entry.createdAt === undefined ? {} : { createdAt: entry.createdAt }),
    })
    .onConflictDoNothing({ target: [journalEntries.kind, journalEntries.reference] })
    .returning({ id: journalEntries.id });
  if (inserted === undefined) return { created: false };
  await tx.insert(postings).values(entry.postings.map((posting) => ({ entryId: inserted.id, ...posting })));
  return { created: true, entryId: inserted.id };
}

/** An account's balance in the book: the sum of its postings (`tx`: a scope of db/scope.ts). */
export async function accountBalance(tx: Db, account: string): Promise<bigint> {
  const [row] = await tx
    .select({ total: sql<string>`coalesce(sum(${postings.amountMicro}), 0)::text` })
    .from(postings)
    .where(eq(postings.account, account));
  return BigInt(row?.total ?? '0');
}
