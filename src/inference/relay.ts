import type { CancelSignal } from '../cancellation.js';
import type { Services } from '../services.js';
import type { UpstreamResponse, UpstreamUsage } from '../upstream/port.js';
import type { Admitted } from './admit.js';

/** What the relay delivered and how it ended; settling charges from it. */
export interface Relay {
  /** Tokens handed to the caller, at most max_tokens (priced into the reservation). */
  delivered: number;
  /** The upstream's own usage report: only from a stream read to its end (not cut, not left). */
  report: UpstreamUsage | undefined;
  /**
   * `complete` also for a stream cut past max_tokens; `stalled`: the caller stopped reading past
   * the deadline (write nothing more to it); `client_gone`: the caller went away.
   */
  end: 'complete' | 'upstream_failed' | 'stalled' | 'client_gone';
}

/** Where the relay hands the tokens. */
export interface RelaySink {
  /**
   * Gets each batch as it arrived, cut at max_tokens; returns a promise only when the caller is not
   * keeping up (the write blocks), else nothing — no allocation per token.
   */
  onTokens(contents: readonly string[]): Promise<void> | undefined;
  signal: CancelSignal;
}

// An upstream that honours max_tokens sends nothing after the cap but its end (usage, [DONE]).
const DRAIN_LIMIT_TOKENS = 16;

/**
 * Stage 4: relay the upstream's tokens to the sink and count them, stopping at max_tokens. A caller
 * that stops reading is given up at the upstream's total timeout plus `relayGraceMs`, counted from
 * admission (as the upstream's own timeout counts from its call), so the reservation is settled
 * well before its TTL.
 */
export async function relay(
  services: Services,
  admitted: Admitted,
  upstream: UpstreamResponse,
  sink: RelaySink,
): Promise<Relay> {
  let delivered = 0;
  let beyondCap = 0;
  let upstreamFailed = false;
  let reported = false;
  let stalled = false;
  // Past the deadline the pending write is abandoned. Not a Promise.race against one long-lived
  // promise: every race would leave a reaction on it, kept until the deadline (a leak per write).
  let giveUp: (() => void) | undefined;
  const deadlineTimer = setTimeout(
    () => {
      stalled = true;
      giveUp?.();
    },
    Math.max(
      0,
      admitted.admittedAtMs +
        services.config.upstreamTimeoutMs +
        services.config.relayGraceMs -
        services.clock.now(),
    ),
  );
  deadlineTimer.unref?.();
  const cap = admitted.estimate.maxTokens;
  try {
    for await (const batch of upstream.tokens) {
      if (sink.signal.aborted) break;
      // At the cap nothing more is relayed, but the stream is read to its end (its usage report,
      // and a connection the upstream can keep alive); an upstream that ignores max_tokens is cut.
      const room = cap - delivered;
      const relayed = batch.length <= room ? batch : batch.slice(0, Math.max(0, room));
      beyondCap += batch.length - relayed.length;
      if (relayed.length > 0) {
        delivered += relayed.length;
        const write = sink.onTokens(relayed);
        if (write !== undefined) {
          // A caller that stops reading blocks the write: past the deadline, give up on it.
          await new Promise<void>((resolve, reject) => {
            giveUp = resolve;
            write.then(resolve, reject);
          });
          giveUp = undefined;
          if (stalled) break;
        }
      }
      // After what fitted under the cap was relayed: one burst can carry both.
      if (beyondCap > DRAIN_LIMIT_TOKENS) break;
    }
    reported = !sink.signal.aborted && !stalled && beyondCap <= DRAIN_LIMIT_TOKENS;
  } catch (error) {
    if (!sink.signal.aborted) {
      upstreamFailed = true;
      services.log.warn({ err: error, reservationId: admitted.reservationId }, 'upstream failed mid-stream');
    }
  } finally {
    clearTimeout(deadlineTimer);
  }
  if (stalled)
    services.log.warn({ reservationId: admitted.reservationId }, 'client stopped reading: given up');
  return {
    delivered,
    report: reported ? upstream.usage() : undefined,
    end: stalled
      ? 'stalled'
      : upstreamFailed
        ? 'upstream_failed'
        : sink.signal.aborted
          ? 'client_gone'
          : 'complete',
  };
}
