import { eq } from 'drizzle-orm';
import { cryptoPayments } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { withHydration } from '../ledger/hydrate.js';
import type { Services } from '../services.js';

/**
 * Brings the engine's live balance in line with a payment the book has already recorded: raises
 * it by a mint (`credit.v2`, grant id = payment id, so it applies once however often this runs),
 * then lowers it by a refund (`debit.v1`, debit id = `refundDebitId`, by what the book took back),
 * and marks the row for each. Runs after the commit of a report, and from the payment-credits job
 * for rows a store outage left unmarked. A balance the store lost is rebuilt from the book, which
 * already holds the mint and the refund (both then answer ALREADY_APPLIED). Never throws for a
 * store fault: the book has the money; the engine learns it on the next try.
 */
export async function applyEngineChanges(services: Services, paymentId: string): Promise<void> {
  // Called by payment id (from a report or the job): the admin finds the row.
  const [payment] = await asAdmin(services.db, (tx) =>
    tx.select().from(cryptoPayments).where(eq(cryptoPayments.id, paymentId)),
  );
  if (payment === undefined) return;
  const { tenantId } = payment;
  try {
    if (payment.mintedAt !== null && payment.engineCreditedAt === null) {
      const result = await withHydration(services, tenantId, () =>
        services.store.credit({ tenantId, grantId: payment.id, amountMicro: payment.creditsMicro }),
      );
      if (result.status === 'INVALID_INPUT') {
        services.log.error(
          { paymentId, tenantId, field: result.field },
          'the store refused a minted payment: the conservation job will bring the book to it',
        );
        return;
      }
      await asAdmin(services.db, (tx) =>
        tx
          .update(cryptoPayments)
          .set({ engineCreditedAt: new Date(services.clock.now()) })
          .where(eq(cryptoPayments.id, paymentId)),
      );
      services.log.info(
        { paymentId, tenantId, creditsMicro: payment.creditsMicro.toString(), status: result.status },
        'payment credited',
      );
    }
    const refundedMicro = payment.refundedMicro ?? 0n;
    if (payment.refundedAt !== null && refundedMicro > 0n && payment.engineDebitedAt === null) {
      const result = await withHydration(services, tenantId, () =>
        services.store.debit({ tenantId, debitId: refundDebitId(payment.id), amountMicro: refundedMicro }),
      );
      if (result.status === 'INVALID_INPUT') {
        services.log.error(
          { paymentId, tenantId, field: result.field, refundedMicro: refundedMicro.toString() },
          'the store refused a refund: the conservation job will bring the book to it',
        );
        return;
      }
      await asAdmin(services.db, (tx) =>
        tx
          .update(cryptoPayments)
          .set({ engineDebitedAt: new Date(services.clock.now()) })
          .where(eq(cryptoPayments.id, paymentId)),
      );
      services.log.info(
        { paymentId, tenantId, refundedMicro: refundedMicro.toString(), status: result.status },
        'payment refund debited',
      );
    }
  } catch (error) {
    services.log.warn({ err: error, paymentId, tenantId }, 'payment in the book, not yet in the engine');
  }
}

/**
 * The store's id for a refund's debit (recorded among the applied grants, as a mint's payment id
 * is); src/ledger/hydrate.ts spells it in SQL: keep them in step.
 */
export function refundDebitId(paymentId: string): string {
  return `refund-${paymentId}`;
}
