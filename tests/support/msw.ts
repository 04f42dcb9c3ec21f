import type { RequestHandler } from 'msw';
import { setupServer } from 'msw/node';

/**
 * msw for HTTP that leaves the system (upstream models, the payment provider). Requests to
 * loopback (our own server in a test, a closed port on purpose) pass through; anything else
 * without a handler fails the test.
 */
export function mockNetwork(...handlers: RequestHandler[]) {
  const server = setupServer(...handlers);
  server.listen({
    onUnhandledRequest(request, print) {
      const { hostname } = new URL(request.url);
      if (hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]') return;
      print.error();
    },
  });
  return server;
}

export type SseStep = { data: string } | { delayMs: number } | { fail: string } | { hang: true };

/**
 * A body that streams server-sent events step by step (msw's `sse()` needs EventSource, which
 * Node 20 lacks): `data` writes one event, `delayMs` waits, `fail` breaks the connection
 * mid-stream, `hang` never ends. Ends the body after the last step.
 */
export function sseBody(steps: SseStep[], signal?: AbortSignal): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    async start(controller) {
      for (const step of steps) {
        if (signal?.aborted) return;
        if ('data' in step) controller.enqueue(encoder.encode(`data: ${step.data}\n\n`));
        else if ('delayMs' in step) await new Promise((resolve) => setTimeout(resolve, step.delayMs));
        else if ('fail' in step) return controller.error(new Error(step.fail));
        else return;
      }
      controller.close();
    },
  });
}
