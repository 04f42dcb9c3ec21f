// Default imports, called at request time: named bindings of builtins are copied at import, so
// they would miss interceptors that patch the module (msw in tests, APM agents in production).
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { type HttpClient, HttpConnectError, type HttpRequest, type HttpResponse } from './http.js';

/**
 * node:http(s) with keep-alive agents: connections are reused across requests, so the steady
 * state costs no handshakes. (Global `fetch` costs ~0.65 ms of CPU per request here; this costs a
 * fraction of it — LIBRARY-NOTES.md.)
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
    const url = new URL(request.url);
    const secure = url.protocol === 'https:';
    const headers: Record<string, string> = { ...request.headers };
    if (request.body !== undefined) headers['content-length'] = String(Buffer.byteLength(request.body));
    const options = { method: request.method, headers, signal: request.signal };
    const req = secure
      ? https.request(url, { ...options, agent: agents['https:'] })
      : http.request(url, { ...options, agent: agents['http:'] });
    let connectTimer: ReturnType<typeof setTimeout> | undefined;
    req.on('socket', (socket) => {
      // A reused keep-alive socket is already connected; only a new one gets the connect timeout.
      if (!socket.connecting) return;
      connectTimer = setTimeout(
        () => req.destroy(new HttpConnectError(`connect timeout after ${request.connectTimeoutMs} ms`)),
        request.connectTimeoutMs,
      );
      socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
    });
    req.on('error', (error) => {
      clearTimeout(connectTimer);
      const stale = req.reusedSocket && (error as NodeJS.ErrnoException).code === 'ECONNRESET';
      reject(
        error instanceof HttpConnectError || request.signal.aborted
          ? error
          : new HttpConnectError(error.message, stale),
      );
    });
    req.on('response', (response: IncomingMessage) => {
      clearTimeout(connectTimer);
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

/**
 * A response body as an async iterator with one promise per wait: 'data' events, the stream paused
 * while chunks wait to be taken. (Readable's own async iterator is an async generator costing
 * several promises per chunk; on slow streams they live long enough to be promoted.)
 */
class BodyIterator implements AsyncIterator<Uint8Array> {
  private readonly queue: Buffer[] = [];
  private ended = false;
  private failure: Error | undefined;
  private waiting:
    | { resolve(result: IteratorResult<Uint8Array>): void; reject(error: unknown): void }
    | undefined;

  constructor(private readonly stream: IncomingMessage) {
    stream.on('data', (chunk: Buffer) => {
      const waiting = this.waiting;
      if (waiting !== undefined) {
        this.waiting = undefined;
        waiting.resolve({ value: chunk, done: false });
        return;
      }
      this.queue.push(chunk);
      stream.pause();
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
    const chunk = this.queue.shift();
    if (chunk !== undefined) {
      if (this.queue.length === 0) this.stream.resume();
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

  private wake(): void {
    const waiting = this.waiting;
    if (waiting === undefined) return;
    this.waiting = undefined;
    if (this.failure !== undefined) waiting.reject(this.failure);
    else waiting.resolve({ value: undefined, done: true });
  }
}
