import { type HttpClient, HttpConnectError } from './http.js';

/**
 * The Workers transport: `fetch`. There is no separate connect phase to time, so the connect
 * timeout bounds the wait for the response head.
 */
export function fetchHttpClient(): HttpClient {
  return {
    async request(request) {
      // fetch takes a real AbortSignal: one for the caller's signal and the connect timeout both.
      const controller = new AbortController();
      let timedOut = false;
      const onAbort = () => controller.abort(request.signal.reason);
      if (request.signal.aborted) onAbort();
      else request.signal.addEventListener('abort', onAbort, { once: true });
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, request.connectTimeoutMs);
      let response: Response;
      try {
        response = await fetch(request.url, {
          method: request.method,
          headers: request.headers,
          ...(request.body === undefined ? {} : { body: request.body }),
          signal: controller.signal,
        });
      } catch (error) {
        request.signal.removeEventListener('abort', onAbort);
        if (request.signal.aborted) throw error;
        throw new HttpConnectError(timedOut ? 'no response before the connect timeout' : String(error));
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
