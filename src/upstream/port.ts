import type { CancelSignal } from '../cancellation.js';
import { AppError } from '../errors.js';

/** What every upstream (local, finn, openai) is asked: one completion, streamed, abortable. */
export interface UpstreamRequest {
  pool: string;
  prompt: string;
  /** The caller's messages when it sent a chat (OpenAI-compatible upstreams get them as they are). */
  messages?: readonly { role: string; content: string }[] | undefined;
  maxTokens: number;
  /**
   * Whether the caller reads a stream. When it does not, an adapter may ask for the answer in one
   * piece (OpenAI-compatible upstreams: one JSON body, not ~20 SSE events to parse).
   */
  stream: boolean;
  /** Who the request is for: the claims of the S2S token (finn). */
  caller: { tenantId: string; tier: number; keyId: string; subject: string; reservationId: string };
  /** Aborted when the client goes away or the relay stops at the reservation. */
  signal: CancelSignal;
}

// 10^9 tokens: far beyond any reservation; settlement clamps what it believes anyway.
const MAX_REPORTED_TOKENS = 1_000_000_000;

/** A token count an upstream may report: a whole number from 0 to 10^9. */
export function isTokenCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= MAX_REPORTED_TOKENS;
}

/** Usage as the upstream reports it; `promptTokens` is absent when it reports only the completion. */
export interface UpstreamUsage {
  promptTokens?: number;
  completionTokens: number;
}

/** An upstream that answered (its first byte arrived); the tokens follow. */
export interface UpstreamResponse {
  /** The pool the upstream says it used (finn's `X-Pool-Used`), if it said. */
  poolUsed?: string | undefined;
  /** finn's `X-Personality-Id`, if any. */
  personalityId?: string | undefined;
  /**
   * Token contents in order, in batches as they arrived (never empty). Throws
   * `UpstreamUnavailable` if the upstream dies mid-stream.
   */
  tokens: AsyncIterable<readonly string[]>;
  /** The upstream's own usage report (done event, `X-Token-Count`, OpenAI's usage chunk), once the tokens end. */
  usage(): UpstreamUsage | undefined;
}

/** Contract compatibility of the upstream (finn reports its version on `GET /health`). */
export type ContractStatus =
  | 'not_applicable'
  | 'unchecked'
  | 'compatible'
  | 'minor_mismatch'
  | 'incompatible'
  | 'unreachable';

export interface UpstreamStatus {
  name: string;
  contract: { status: ContractStatus; version?: string; expected?: string };
  breaker: 'closed' | 'open' | 'half_open';
}

export interface Upstream {
  readonly name: string;
  /**
   * Resolves once the upstream has answered with a success status, after retries; rejects with
   * `UpstreamUnavailable` (503) otherwise. Nothing has been sent to the caller at that point.
   */
  open(request: UpstreamRequest): Promise<UpstreamResponse>;
  status(): UpstreamStatus;
  /** Starts background checks (finn's contract version); `stop` ends them. */
  start?(): void;
  stop?(): void;
}

/** 503 `upstream_unavailable`: the model service failed, timed out, is incompatible, or its breaker is open. */
export class UpstreamUnavailable extends AppError {
  constructor(
    message: string,
    /** Whether another attempt may succeed (connect errors, 5xx, timeouts before the first byte). */
    readonly retryable = false,
  ) {
    super('upstream_unavailable', message);
  }
}
