import { and, asc, eq, gt, isNotNull, lt, or } from 'drizzle-orm';
import { cryptoPayments } from '../../db/schema/index.js';
import { asAdmin } from '../../db/scope.js';
import { ProviderError, paymentProvider } from '../payments/nowpayments.js';
import { openPayment, reportFor } from '../payments/reconcile.js';
import { applyStatusReport } from '../payments/state-machine.js';
import { isPaymentStatus, transition } from '../payments/status.js';
import type { Job } from './job.js';

// 15 min: NOWPayments sends an IPN at each status change within seconds; a payment quiet this long
// after it was opened may have lost one.
export const RECONCILE_AFTER_MS = 15 * 60_000;
// 100: one provider call each, one after another; a cycle stays within a minute or two.
export const RECONCILE_BATCH = 100;
// Three failures in a row: the provider is down, not one payment; the next cycle tries again
// (each can cost the client's 10 s timeout).
const MAX_UNAVAILABLE_IN_A_ROW = 3;
/** After a 429: 30 s, doubling per 429 in a row, at most 5 min (before jitter). */
export const BACKOFF_BASE_MS = 30_000;
export const BACKOFF_MAX_MS = 300_000;
// An hour: the most of a provider's Retry-After we honour, so a wild header cannot stop the job.
export const RETRY_AFTER_MAX_MS = 3_600_000;

/**
 * The backoff after the provider's 429s, kept on the job object so the next run sees it: one per
 * process. Another instance that takes the lease over starts without it, and so does a Workers
 * isolate (its jobs are built per isolate): at worst one call that meets the 429 again.
 */
export interface ProviderBackoff {
  /** 429s in a row, 0 once the provider answers again. */
  failures: number;
  /** No provider call before this (services.clock ms). */
  untilMs: number;
}

/**
 * The delay after the `failures`-th 429 in a row: 30 s doubling, capped at 5 min, made up to a fifth
 * shorter at random (so the cap holds and each step still outgrows the last); the provider's
 * Retry-After when longer, up to an hour.
 */
export function backoffDelayMs(failures: number, random: number, retryAfterMs?: number): number {
  const exponential = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1));
  const jittered = Math.round(exponential * (1 - 0.2 * random));
  return Math.max(jittered, Math.min(retryAfterMs ?? 0, RETRY_AFTER_MAX_MS));
}

export interface PaymentReconciliationJob extends Job {
  readonly backoff: Readonly<ProviderBackoff>;
}

/**
 * Every PAYMENT_RECONCILE_INTERVAL_MS (5 min): payments without an end (waiting, confirming,
 * partially_paid, confirmed, sending — any of them may have lost the IPN that moves it on; a
 * partially_paid payment can still be topped up, or expire) opened more than 15 min ago and known
 * to the provider by a payment id, oldest first, at most RECONCILE_BATCH a run: each read with
 * GET /payment/:id and, when the report moves it, applied through `applyStatusReport` (fenced).
 * A report that moves nothing (the same status, older, backward) is not recorded, so an open
 * payment does not add a webhook event every cycle.
 *
 * Payments without a provider payment id are skipped (src/payments/reconcile.ts says why). The
 * provider down (5xx, timeout) leaves a payment as it is — never failed for it; a 429 ends the run
 * and backs off. Nothing runs while payments are off or have no API key.
 */
export function paymentReconciliationJob(options: {
  intervalMs: number;
  /** Test seam for the jitter, in [0, 1). */
  random?: () => number;
}): PaymentReconciliationJob {
  const random = options.random ?? Math.random;
  const backoff: ProviderBackoff = { failures: 0, untilMs: 0 };
  // Where the next run goes on: a run takes the batch after the last payment the previous one
  // finished, starting over from the oldest once a batch comes back short. So payments that stay
  // open for days (partially_paid) do not keep the batch from younger ones.
  let cursor: { createdAt: Date; id: string } | undefined;

  return {
    name: 'payment-reconciliation',
    intervalMs: options.intervalMs,
    singleton: true,
    backoff,
    run: async (ctx) => {
      const { services, startedAtMs } = ctx;
      const { config, db, log } = services;
      // Switched off as the webhook is: PAYMENTS=off or the global `payments` flag (re-read here:
      // `spicegate worker` runs no flag poll).
      await services.flags.refresh();
      if (!services.flags.enabled('payments') || config.nowpaymentsApiKey === undefined) return;
      if (startedAtMs < backoff.untilMs) {
        log.debug({ untilMs: backoff.untilMs }, 'payment reconciliation backing off after a 429');
        return;
      }
      const provider = paymentProvider(config);
      const requestId = `job:payment-reconciliation:${ctx.holder}`;
      const after = cursor;
      const rows = await asAdmin(db, (tx) =>
        tx
          .select({
            id: cryptoPayments.id,
            providerPaymentId: cryptoPayments.providerPaymentId,
            status: cryptoPayments.status,
            lastIpnUpdatedAt: cryptoPayments.lastIpnUpdatedAt,
            createdAt: cryptoPayments.createdAt,
          })
          .from(cryptoPayments)
          .where(
            and(
              openPayment,
              isNotNull(cryptoPayments.providerPaymentId),
              lt(cryptoPayments.createdAt, new Date(startedAtMs - RECONCILE_AFTER_MS)),
              after === undefined
                ? undefined
                : or(
                    gt(cryptoPayments.createdAt, after.createdAt),
                    and(eq(cryptoPayments.createdAt, after.createdAt), gt(cryptoPayments.id, after.id)),
                  ),
            ),
          )
          .orderBy(asc(cryptoPayments.createdAt), asc(cryptoPayments.id))
          .limit(RECONCILE_BATCH),
      );

      let unavailableInARow = 0;
      for (const payment of rows) {
        if (ctx.signal.aborted) return;
        const context = { paymentId: payment.id, providerPaymentId: payment.providerPaymentId };
        let answer: Awaited<ReturnType<typeof provider.getPayment>>;
        try {
          // Not null: the query asks for it.
          answer = await provider.getPayment(payment.providerPaymentId as string);
        } catch (error) {
          if (!(error instanceof ProviderError)) throw error;
          const reason = {
            ...context,
            kind: error.kind,
            providerStatus: error.status,
            reason: error.message,
          };
          if (error.kind === 'rate_limited') {
            backoff.failures += 1;
            const delayMs = backoffDelayMs(backoff.failures, random(), error.retryAfterMs);
            backoff.untilMs = services.clock.now() + delayMs;
            log.warn({ ...reason, delayMs }, 'payment reconciliation rate limited: backing off');
            return;
          }
          if (error.kind === 'refused' && (error.status === 401 || error.status === 403)) {
            log.error(reason, 'the payment provider refused our API key: check NOWPAYMENTS_API_KEY');
            return;
          }
          log.warn(reason, 'payment not reconciled: the provider did not answer (left as it is)');
          if (error.kind === 'unavailable') {
            // The cursor stays: a run that stops here starts the next one with these payments.
            unavailableInARow += 1;
            if (unavailableInARow >= MAX_UNAVAILABLE_IN_A_ROW) return;
          } else {
            unavailableInARow = 0;
            cursor = { createdAt: payment.createdAt, id: payment.id };
          }
          continue;
        }
        backoff.failures = 0;
        unavailableInARow = 0;
        cursor = { createdAt: payment.createdAt, id: payment.id };

        const report = reportFor(payment, answer);
        if (report === undefined) {
          log.error(
            { ...context, orderId: answer.orderId },
            'the provider reports the payment under another order: not applied',
          );
          continue;
        }
        // News: another status, or the same one updated later (actually_paid may have grown).
        const moves =
          isPaymentStatus(report.status) &&
          (report.status !== payment.status || report.updatedAtMs > (payment.lastIpnUpdatedAt ?? 0)) &&
          transition(payment.status, payment.lastIpnUpdatedAt, report.status, report.updatedAtMs).apply;
        if (!moves) {
          log.debug(
            { ...context, status: payment.status, providerStatus: report.status },
            'payment unchanged at the provider',
          );
          continue;
        }
        await ctx.fence();
        const outcome = await applyStatusReport(services, report, { requestId });
        log.info(
          {
            ...context,
            from: payment.status,
            providerStatus: report.status,
            outcome: outcome.status,
            minted: outcome.minted,
          },
          'payment reconciled',
        );
      }
      if (rows.length < RECONCILE_BATCH) cursor = undefined;
    },
  };
}
