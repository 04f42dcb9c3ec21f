import { type HttpClient, HttpConnectError } from './http.js';

/**
 * The Workers transport: `fetch`. There is no separate connect phase to time, so the connect
 * timeout bounds the wait for the response head.
 */
export function fetchHttpClient(): HttpClient {
  return {
    async request(request) {
      const head = new AbortController();
      const timer = setTimeout(() => head.abort(), request.connectTimeoutMs);
      let response: Response;
      try {
        response = await fetch(request.url, {
          method: request.method,
          headers: request.headers,
          ...(request.body === undefined ? {} : { body: request.body }),
          signal: AbortSignal.any([request.signal, head.signal]),
        });
      } catch (error) {
        if (request.signal.aborted) throw error;
        throw new HttpConnectError(
          head.signal.aborted ? 'no response before the connect timeout' : String(error),
        );
      } finally {
        clearTimeout(timer);
      }
      const body = response.body;
      return {
        status: response.status,
        header: (name) => response.headers.get(name) ?? undefined,
        body: body === null ? emptyBody() : (body as unknown as AsyncIterable<Uint8Array>),
        discard: () => void body?.cancel().catch(() => {}),
      };
    },
  };
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}
