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
        body: response,
        discard: () => {
          response.destroy();
        },
      });
    });
    req.end(request.body);
  });
}
