/**
 * The one HTTP call upstream adapters make, behind a port: node:http with keep-alive on Node
 * (http-node.ts — the cheapest client in CPU, and msw can intercept it in tests), `fetch`
 * on Workers (http-fetch.ts).
 */
import type { CancelSignal } from '../cancellation.js';

export interface HttpRequest {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** Aborts the request at any point, the body included. */
  signal: CancelSignal;
  /** How long the TCP (and TLS) connection may take. */
  connectTimeoutMs: number;
}

export interface HttpResponse {
  status: number;
  header(name: string): string | undefined;
  body: AsyncIterable<Uint8Array>;
  /** Drops the connection and the rest of the body. */
  discard(): void;
}

export interface HttpClient {
  /** Resolves with the response head; rejects with `HttpConnectError` when no response came. */
  request(request: HttpRequest): Promise<HttpResponse>;
  close?(): void;
}

/** No response at all: refused, reset, unreachable, or the connect timeout passed. Retryable. */
export class HttpConnectError extends Error {
  override readonly name = 'HttpConnectError';

  constructor(
    message: string,
    /**
     * A kept-alive connection the upstream had closed meanwhile (the request never reached it):
     * worth one immediate retry on a fresh connection, not a failure of the upstream.
     */
    readonly staleConnection = false,
  ) {
    super(message);
  }
}
