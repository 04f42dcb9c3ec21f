// Default imports, called at request time: named bindings of builtins are copied at import, so
// they would miss interceptors that patch the module (msw in tests, APM agents in production).
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { CancelSignal } from '../cancellation.js';
import { type HttpClient, HttpConnectError, type HttpRequest, type HttpResponse } from './http.js';

/**
 * node:http(s) with keep-alive agents: connections are reused across requests, so the steady
 * state costs no handshakes. Not global `fetch`, which costs several times the CPU per request
 * (docs/performance.md).
 */
export function nodeHttpClient(): HttpClient {
  const agents = {
    'http:': new http.Agent({ keepAlive: true, maxFreeSockets: 256 }),
    'https:': new https.Agent({ keepAlive: true, maxFreeSockets: 256 }),
  };
  return {
    request: (request) => send(request, agents),
    close: () => {
      agents['http:'].destroy();
      agents['https:'].destroy();
    },
  };
}

function send(
  request: HttpRequest,
  agents: { 'http:': http.Agent; 'https:': https.Agent },
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const { signal } = request;
    if (signal.aborted) {
      reject(abortError(signal));
      return;
    }
    const target = parseTarget(request.url);
    // Built by assignment, not by spreading (docs/performance.md, 2026-12-03).
    const headers: Record<string, string> = {};
    for (const name in request.headers) headers[name] = request.headers[name] as string;
    if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(request.body));
    const options: http.RequestOptions = {
      method: request.method,
      host: target.hostname,
      port: target.port,
      path: target.path,
      headers,
      agent: target.secure ? agents['https:'] : agents['http:'],
    };
    if (target.auth !== undefined) options.auth = target.auth;
    const req = target.secure ? https.request(options) : http.request(options);
    // The signal is watched here rather than passed as node:http's `signal` option, which also
    // attaches a finished() watcher (half a dozen listeners) to every request.
    const onAbort = () => req.destroy(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    const unwatch = () => signal.removeEventListener('abort', onAbort);
    let connectTimer: ReturnType<typeof setTimeout> | undefined;
    req.on('socket', (socket) => {
      // A reused keep-alive socket is already connected; only a new one gets the connect timeout.
      if (!socket.connecting) return;
      connectTimer = setTimeout(
        () => req.destroy(new HttpConnectError(`connect timeout after ${request.connectTimeoutMs} ms`)),
        request.connectTimeoutMs,
      );
      socket.once(target.secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
    });
    req.on('error', (error) => {
      clearTimeout(connectTimer);
      unwatch();
      const stale = req.reusedSocket && (error as NodeJS.ErrnoException).code === 'ECONNRESET';
      reject(
        error instanceof HttpConnectError || signal.aborted
          ? error
          : new HttpConnectError(error.message, stale),
      );
    });
    req.on('response', (response: IncomingMessage) => {
      clearTimeout(connectTimer);
      // Read to its end or dropped, the response closes; until then an abort destroys it.
      response.once('close', unwatch);
      resolve({
        status: response.statusCode ?? 0,
        header: (name) => {
          const value = response.headers[name.toLowerCase()];
          return Array.isArray(value) ? value[0] : value;
        },
        body: { [Symbol.asyncIterator]: () => new BodyIterator(response) },
        discard: () => {
          response.destroy();
        },
      });
    });
    req.end(request.body);
  });
}

function abortError(signal: CancelSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('The request was aborted');
}

interface Target {
  secure: boolean;
  hostname: string;
  port: number;
  path: string;
  /** `user:password` from the URL, as node:http takes it. */
  auth: string | undefined;
}

// Upstream URLs come from configuration (a handful): each is parsed once. Bounded all the same.
const targets = new Map<string, Target>();
const MAX_TARGETS = 64;

function parseTarget(url: string): Target {
  let target = targets.get(url);
  if (target === undefined) {
    const parsed = new URL(url);
    const secure = parsed.protocol === 'https:';
    target = {
      secure,
      // [::1] → ::1, as node:http wants the bare address.
      hostname: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: parsed.port === '' ? (secure ? 443 : 80) : Number(parsed.port),
      path: `${parsed.pathname}${parsed.search}`,
      auth:
        parsed.username === ''
          ? undefined
          : `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`,
    };
    if (targets.size >= MAX_TARGETS) targets.clear();
    targets.set(url, target);
  }
  return target;
}

/**
 * A response body as an async iterator with one promise per wait: 'data' events, the stream paused
 * while chunks wait to be taken. Not Readable's own async iterator: an async generator whose
 * several promises per chunk outlive young-generation collections on slow streams.
 * What one socket read brought is taken as one chunk: the HTTP parser emits a 'data' event per
 * chunk of a chunked body (an SSE upstream's event each) synchronously, and the waiting reader is
 * answered in a microtask after them, with all of them — so a burst of events is parsed, relayed
 * and written to the client once, not once per event.
 */
class BodyIterator implements AsyncIterator<Uint8Array> {
  private queue: Buffer[] = [];
  private ended = false;
  private failure: Error | undefined;
  private waking = false;
  private waiting:
    | { resolve(result: IteratorResult<Uint8Array>): void; reject(error: unknown): void }
    | undefined;

  constructor(private readonly stream: IncomingMessage) {
    stream.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      if (this.waiting === undefined) {
        stream.pause();
        return;
      }
      if (this.waking) return;
      this.waking = true;
      queueMicrotask(this.wake);
    });
    stream.once('end', () => {
      this.ended = true;
      this.wake();
    });
    stream.once('error', (error) => {
      this.failure ??= error;
      this.wake();
    });
    stream.once('close', () => {
      if (this.ended) return;
      this.failure ??= new Error('The response ended before its end');
      this.wake();
    });
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.queue.length > 0) {
      const chunk = this.take();
      this.stream.resume();
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** The consumer stopped early: the rest of the body (and its connection) is dropped. */
  return(): Promise<IteratorResult<Uint8Array>> {
    if (!this.ended) this.stream.destroy();
    this.ended = true;
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Every chunk waiting, as one. */
  private take(): Buffer {
    const queue = this.queue;
    this.queue = [];
    return queue.length === 1 ? (queue[0] as Buffer) : Buffer.concat(queue);
  }

  /** Answers the waiting reader: the chunks first (also those before an end or error), then the end. */
  private readonly wake = (): void => {
    this.waking = false;
    const waiting = this.waiting;
    if (waiting === undefined) return;
    if (this.queue.length > 0) {
      this.waiting = undefined;
      waiting.resolve({ value: this.take(), done: false });
    } else if (this.failure !== undefined) {
      this.waiting = undefined;
      waiting.reject(this.failure);
    } else if (this.ended) {
      this.waiting = undefined;
      waiting.resolve({ value: undefined, done: true });
    }
  };
}
