import { Cancellation, type CancelSignal } from '../cancellation.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../observability/logger.js';
import { CircuitBreaker } from './breaker.js';
import { type HttpClient, HttpConnectError, type HttpResponse } from './http.js';
import {
  type Upstream,
  type UpstreamRequest,
  type UpstreamResponse,
  type UpstreamStatus,
  UpstreamUnavailable,
  type UpstreamUsage,
} from './port.js';
import { sleep } from './sleep.js';
import { type EventDecoder, SseTokens } from './sse.js';

// 1 s then 2 s (DESIGN.md §4): at most two retries, and only before the first byte, so a retried
// request never delivers a token twice.
export const RETRY_DELAYS_MS: readonly number[] = [1_000, 2_000];

export interface HttpUpstreamOptions {
  http: HttpClient;
  clock: Clock;
  log: Logger;
  connectTimeoutMs: number;
  /** The whole request, stream included. */
  timeoutMs: number;
  /**
   * Until the response head, retries and their backoff included: a hung upstream fails the request
   * after this, not after `timeoutMs`. At most `timeoutMs`.
   */
  firstByteTimeoutMs: number;
  retryDelaysMs?: readonly number[];
  breaker?: CircuitBreaker;
}

/** What differs between HTTP upstreams: how a request is written and how its stream is read. */
export interface UpstreamProtocol {
  name: string;
  /** The HTTP request for one attempt (finn signs a fresh S2S token here). */
  build(request: UpstreamRequest): Promise<{ url: string; headers: Record<string, string>; body: string }>;
  /** How a 2xx response to `request` is read: its headers now, its body as it comes. */
  read(response: HttpResponse, request: UpstreamRequest): UpstreamReader;
  /** Refuses to route (e.g. an incompatible contract), or undefined. */
  refusal?(): string | undefined;
  contract?(): UpstreamStatus['contract'];
  start?(): void;
  stop?(): void;
}

/** A 2xx response as one protocol reads it. */
export interface UpstreamReader {
  poolUsed?: string | undefined;
  personalityId?: string | undefined;
  body:
    | { kind: 'sse'; events: EventDecoder }
    /** An answer in one JSON body: its content as one piece; throws `UpstreamUnavailable` if malformed. */
    | { kind: 'json'; read(json: unknown): readonly string[] };
  /** The upstream's usage report, once the body has been read. */
  usage(): UpstreamUsage | undefined;
}

// An answer in one piece is at most 4,096 tokens of text; anything far larger is not one.
const MAX_JSON_BYTES = 4 * 1024 * 1024;
// Decodes whole answers only (no streaming state), so one serves every request rather than a new
// TextDecoder per answer, whose construction outweighs the decoding.
const utf8 = new TextDecoder();

/**
 * An upstream over HTTP with the resilience DESIGN.md §4 asks for: connect, first-byte and total
 * timeouts, retries on connect errors and 5xx before the first byte (within the first-byte
 * timeout), and a circuit breaker. A request that
 * fails after its retries, or dies mid-stream, counts as one breaker failure; a 4xx does not (the
 * upstream is up and refused this request).
 */
export function httpUpstream(protocol: UpstreamProtocol, options: HttpUpstreamOptions): Upstream {
  const breaker = options.breaker ?? new CircuitBreaker(options.clock);
  const delays = options.retryDelaysMs ?? RETRY_DELAYS_MS;

  async function open(request: UpstreamRequest): Promise<UpstreamResponse> {
    const refusal = protocol.refusal?.();
    if (refusal !== undefined) throw new UpstreamUnavailable(refusal);
    const permit = breaker.tryAcquire();
    if (!permit.allowed) throw new UpstreamUnavailable('The upstream is unavailable (circuit open)');
    const probe = permit.probe;

    // Not an AbortController: see Cancellation.
    const whole = new Cancellation();
    const onCallerAbort = () => whole.abort(request.signal.reason);
    request.signal.addEventListener('abort', onCallerAbort, { once: true });
    // One timer, first armed at the first-byte deadline: one deadline for the whole wait (a
    // per-attempt wait with its retries would hold a hung upstream's caller, and its reservation,
    // for the total timeout again); a stream still running then gets the rest of the total.
    // Timeouts are retryable failures: the upstream's, so they count towards the breaker.
    const firstByteMs = Math.min(options.firstByteTimeoutMs, options.timeoutMs);
    let answered = false;
    const totalTimedOut = () =>
      whole.abort(new UpstreamUnavailable(`The upstream timed out after ${options.timeoutMs} ms`, true));
    let timer = setTimeout(() => {
      if (answered) {
        timer = setTimeout(totalTimedOut, options.timeoutMs - firstByteMs);
        timer.unref?.();
      } else if (firstByteMs < options.timeoutMs) {
        whole.abort(
          new UpstreamUnavailable(`The upstream timed out: no response within ${firstByteMs} ms`, true),
        );
      } else totalTimedOut();
    }, firstByteMs);
    timer.unref?.();
    const cleanup = () => {
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onCallerAbort);
    };

    let response: HttpResponse;
    try {
      response = await firstResponse(request, whole.signal, permit.probe);
      answered = true;
    } catch (error) {
      cleanup();
      if (request.signal.aborted) {
        breaker.release(permit.probe);
        throw error;
      }
      // Only the upstream's own failures count: a 4xx, or a fault of ours (e.g. no signing key),
      // says nothing about its health.
      if (error instanceof UpstreamUnavailable && error.retryable) breaker.failure();
      else breaker.release(permit.probe);
      throw error;
    }

    const read = protocol.read(response, request);
    const tokens = new TokenIterator(
      read,
      response,
      (outcome, error) => {
        if (outcome === 'failed') {
          options.log.warn(
            { upstream: protocol.name, err: { message: (error as Error | undefined)?.message } },
            'upstream stream broke',
          );
        }
        if (outcome === 'ok') breaker.success();
        else if (outcome === 'failed') breaker.failure();
        else breaker.release(probe);
        cleanup();
      },
      request.signal,
    );
    return {
      poolUsed: read.poolUsed,
      personalityId: read.personalityId,
      tokens: { [Symbol.asyncIterator]: () => tokens },
      usage: read.usage,
    };
  }

  async function firstResponse(
    request: UpstreamRequest,
    signal: CancelSignal,
    probe: boolean,
  ): Promise<HttpResponse> {
    // A half-open probe is one attempt: its answer decides the breaker.
    const attempts = probe ? 1 : delays.length + 1;
    // Created only on failure: an Error captures a stack trace, too dear for every request.
    let last: UpstreamUnavailable | undefined;
    let staleRetried = false;
    let immediate = false;
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      if (attempt > 0 && !immediate) await sleep(delays[attempt - 1] ?? 0, signal);
      immediate = false;
      if (signal.aborted) throw signal.reason ?? last ?? new UpstreamUnavailable('The upstream failed', true);
      const built = await protocol.build(request);
      let response: HttpResponse;
      try {
        response = await options.http.request({
          method: 'POST',
          url: built.url,
          headers: built.headers,
          body: built.body,
          signal,
          connectTimeoutMs: options.connectTimeoutMs,
        });
      } catch (error) {
        if (signal.aborted) throw signal.reason ?? error;
        if (!(error instanceof HttpConnectError)) throw error;
        if (error.staleConnection && !staleRetried) {
          // Once, at once, and not counted as an attempt: the next socket is a fresh one.
          staleRetried = true;
          immediate = true;
          attempt -= 1;
          continue;
        }
        last = new UpstreamUnavailable('The upstream could not be reached', true);
        options.log.warn(
          { upstream: protocol.name, attempt, err: { message: error.message } },
          'upstream connect failed',
        );
        continue;
      }
      if (response.status >= 200 && response.status < 300) return response;
      response.discard();
      if (response.status >= 500) {
        last = new UpstreamUnavailable(`The upstream failed (status ${response.status})`, true);
        options.log.warn({ upstream: protocol.name, attempt, status: response.status }, 'upstream 5xx');
        continue;
      }
      options.log.error({ upstream: protocol.name, status: response.status }, 'upstream refused the request');
      throw new UpstreamUnavailable(`The upstream refused the request (status ${response.status})`);
    }
    throw last ?? new UpstreamUnavailable('The upstream failed', true);
  }

  return {
    name: protocol.name,
    open,
    status: () => ({
      name: protocol.name,
      contract: protocol.contract?.() ?? { status: 'not_applicable' },
      breaker: breaker.state,
    }),
    ...(protocol.start === undefined ? {} : { start: () => protocol.start?.() }),
    ...(protocol.stop === undefined ? {} : { stop: () => protocol.stop?.() }),
  };
}

type Outcome = 'ok' | 'failed' | 'caller_left';

const DONE: IteratorReturnResult<undefined> = { value: undefined, done: true };

/**
 * A 2xx response's tokens, batch by batch: the SSE framing and the protocol's decoding are
 * synchronous, so the body's chunks are the only awaits. `onEnd` runs exactly once — when the body
 * is read to its end (ok), fails (failed, or caller_left when the caller had gone), or the consumer
 * stops early (`return`: the rest of the body and its connection are dropped; ok, since the
 * upstream answered). A class, not an async generator: an async generator keeps each request's
 * objects alive through young-generation collections (figures: docs/performance.md).
 */
class TokenIterator implements AsyncIterator<readonly string[]> {
  private ended = false;
  private body: AsyncIterator<Uint8Array> | undefined;
  private sse: SseTokens | undefined;
  private jsonRead = false;
  private bodyDone = false;

  constructor(
    private readonly read: UpstreamReader,
    private readonly response: HttpResponse,
    private readonly onEnd: (outcome: Outcome, error?: unknown) => void,
    private readonly callerSignal: CancelSignal,
  ) {}

  async next(): Promise<IteratorResult<readonly string[]>> {
    if (this.ended) return DONE;
    try {
      const batch = await this.nextBatch();
      if (batch !== undefined) return { value: batch, done: false };
      this.end('ok');
      return DONE;
    } catch (error) {
      if (this.callerSignal.aborted) {
        this.end('caller_left');
        throw error;
      }
      this.end('failed', error);
      throw error instanceof UpstreamUnavailable
        ? error
        : new UpstreamUnavailable('The upstream stream broke');
    }
  }

  async return(): Promise<IteratorResult<readonly string[]>> {
    if (!this.ended) {
      // Stopped early (the reservation is used up, or the client left): drop the connection. The
      // upstream did answer, so for the breaker this is a success.
      this.response.discard();
      this.end('ok');
    }
    return DONE;
  }

  /** The next non-empty batch, or undefined at a complete end. */
  private async nextBatch(): Promise<readonly string[] | undefined> {
    const body = this.read.body;
    if (body.kind === 'json') {
      if (this.jsonRead) return undefined;
      this.jsonRead = true;
      const whole = body.read(await readJson(this.response.body));
      return whole.length > 0 ? whole : undefined;
    }
    this.sse ??= new SseTokens(body.events);
    if (this.bodyDone) {
      // The tokens the body's end completed went out last time.
      this.sse.assertEnded();
      return undefined;
    }
    this.body ??= this.response.body[Symbol.asyncIterator]();
    for (;;) {
      const chunk = await this.body.next();
      if (chunk.done === true) {
        this.bodyDone = true;
        const last = this.sse.end();
        if (last !== undefined) return last;
        this.sse.assertEnded();
        return undefined;
      }
      const batch = this.sse.feed(chunk.value);
      if (batch !== undefined) return batch;
    }
  }

  private end(outcome: Outcome, error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    if (outcome !== 'ok') this.response.discard();
    this.onEnd(outcome, error);
  }
}

/** The body parsed as JSON (undefined when it is not JSON); UpstreamUnavailable past MAX_JSON_BYTES. */
async function readJson(body: AsyncIterable<Uint8Array>): Promise<unknown> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > MAX_JSON_BYTES) throw new UpstreamUnavailable('The upstream answer is too large');
    chunks.push(chunk);
  }
  let bytes = chunks[0] ?? new Uint8Array(0);
  if (chunks.length > 1) {
    bytes = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.byteLength;
    }
  }
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    return undefined;
  }
}
