import { and, asc, eq, gt, isNotNull, isNull, lt, or } from 'drizzle-orm';
import { cryptoPayments } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { applyEngineChanges } from '../payments/engine.js';
import type { Job } from './job.js';

// 10 s: a mint committed while the store was down reaches the live balance within seconds of the
// store's return, not at the next conservation check (5 min).
const PAYMENT_CREDITS_INTERVAL_MS = 10_000;
// The request that committed a mint or refund applies it to the engine right after its commit; the
// job leaves it that long, so both do not write the same change (it would apply once anyway).
export const ENGINE_OWED_GRACE_MS = 5_000;
// Pages of 100, at most 10 a run: owed rows are the rare aftermath of a store outage.
const PAGE = 100;
const MAX_PAGES = 10;

/**
 * Mints and refunds the book holds and the engine has not applied (`engine_credited_at` or
 * `engine_debited_at` still null; crypto_payments_engine_owed_idx), oldest first: each handed to
 * `applyEngineChanges`, which applies it once by the payment's grant id and marks the row; each
 * write fenced. Runs whether payments are on or off: what the book owes is owed either way.
 */
export const paymentCreditsJob: Job = {
  name: 'payment-credits',
  intervalMs: PAYMENT_CREDITS_INTERVAL_MS,
  singleton: true,
  run: async (ctx) => {
    const { db } = ctx.services;
    const before = new Date(ctx.startedAtMs - ENGINE_OWED_GRACE_MS);
    // Within one run, pages walk on past rows the engine still refused, so they cannot hold the
    // rest back; the next run starts over from the oldest.
    let after: { mintedAt: Date; id: string } | undefined;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const rows = await asAdmin(db, (tx) =>
        tx
          .select({ id: cryptoPayments.id, mintedAt: cryptoPayments.mintedAt })
          .from(cryptoPayments)
          .where(
            and(
              or(
                and(
                  isNotNull(cryptoPayments.mintedAt),
                  isNull(cryptoPayments.engineCreditedAt),
                  lt(cryptoPayments.mintedAt, before),
                ),
                and(
                  isNotNull(cryptoPayments.refundedAt),
                  isNull(cryptoPayments.engineDebitedAt),
                  lt(cryptoPayments.refundedAt, before),
                ),
              ),
              after === undefined
                ? undefined
                : or(
                    gt(cryptoPayments.mintedAt, after.mintedAt),
                    and(eq(cryptoPayments.mintedAt, after.mintedAt), gt(cryptoPayments.id, after.id)),
                  ),
            ),
          )
          .orderBy(asc(cryptoPayments.mintedAt), asc(cryptoPayments.id))
          .limit(PAGE),
      );
      for (const row of rows) {
        if (ctx.signal.aborted) return;
        await ctx.fence();
        await applyEngineChanges(ctx.services, row.id);
      }
      const last = rows.at(-1);
      // A refund comes after its mint, so every owed row has a minted_at.
      if (rows.length < PAGE || last?.mintedAt == null) return;
      after = { mintedAt: last.mintedAt, id: last.id };
    }
  },
};
