import type { CancelSignal } from '../cancellation.js';
import type { AppError } from '../errors.js';
import type { VerifiedKey } from '../keys/verifier.js';
import type { Services } from '../services.js';
import { type UpstreamResponse, UpstreamUnavailable } from '../upstream/port.js';
import type { Admitted } from './admit.js';
import type { InferenceInput } from './request.js';
import { release } from './settle.js';

export type UpstreamCall =
  | { ok: true; upstream: UpstreamResponse; headers: Record<string, string> }
  | { ok: false; error: AppError };

/**
 * Stage 3: the upstream call, up to its first byte (with its retries and breaker). Nothing has been
 * sent to the caller yet, so a failure here is a plain 503 — and the reservation is released.
 */
export async function openUpstream(
  services: Services,
  key: VerifiedKey,
  input: InferenceInput,
  admitted: Admitted,
  signal: CancelSignal,
): Promise<UpstreamCall> {
  try {
    const upstream = await services.upstream.open({
      pool: admitted.decision.pool,
      prompt: input.prompt,
      messages: input.messages,
      stream: input.stream ?? true,
      maxTokens: admitted.estimate.maxTokens,
      caller: {
        tenantId: key.tenantId,
        tier: key.tenantTier,
        keyId: key.id,
        subject: input.userId ?? key.id,
        reservationId: admitted.reservationId,
      },
      signal,
    });
    const headers: Record<string, string> = {};
    if (upstream.poolUsed !== undefined) headers['X-Pool-Used'] = upstream.poolUsed;
    if (upstream.personalityId !== undefined) headers['X-Personality-Id'] = upstream.personalityId;
    return { ok: true, upstream, headers };
  } catch (error) {
    await release(services, key, admitted).catch((releaseError) =>
      services.log.warn(
        { err: releaseError, reservationId: admitted.reservationId },
        'release after upstream failure',
      ),
    );
    if (error instanceof UpstreamUnavailable) return { ok: false, error };
    if (signal.aborted) return { ok: false, error: new UpstreamUnavailable('The client went away') };
    // A fault of ours on the way (no signing key, a bad URL): logged, and still a 503 to the caller.
    services.log.error({ err: error, reservationId: admitted.reservationId }, 'upstream call failed');
    return { ok: false, error: new UpstreamUnavailable('The upstream call failed') };
  }
}
