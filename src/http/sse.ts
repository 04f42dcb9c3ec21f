import type { Context } from 'hono';
import type { AppEnv } from './context.js';

/** Where a route writes its server-sent events. */
export interface SseStream {
  /**
   * Queues one event per `data` (JSON or `[DONE]`: no line breaks), encoded in one piece. Returns a
   * promise only when the client is not keeping up (HIGH_WATER_BYTES queued): wait for it before
   * writing more. Writes after the client went away are dropped.
   */
  write(...data: string[]): Promise<void> | undefined;
  /** The client went away (the response body was cancelled). */
  readonly aborted: boolean;
}

// What may wait for a slow client before the writer is told to wait: a few hundred token events.
const HIGH_WATER_BYTES = 16_384;

/**
 * A `text/event-stream` response that `run` writes into: one ReadableStream whose queue the
 * encoded events go into, read by the runtime's adapter (@hono/node-server, Workers). Not Hono's
 * `streamSSE`: its TransformStream and writer cost a dozen promises per event, and it leaves a
 * failure to console.error.
 * `onAbort` runs once when the client goes away.
 */
export function sseResponse<E extends AppEnv>(
  c: Context<E>,
  /** Resolves 'abandon' for a client that stopped reading: its connection is dropped, not ended. */
  run: (stream: SseStream) => Promise<'abandon' | undefined>,
  onAbort: () => void,
): Response {
  const encoder = new TextEncoder();
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  let resume: (() => void) | undefined;
  let closed = false;
  const wake = () => {
    const waiting = resume;
    resume = undefined;
    waiting?.();
  };
  const body = new ReadableStream<Uint8Array>(
    {
      start: (streamController) => {
        controller = streamController;
      },
      pull: wake,
      cancel: () => {
        stream.aborted = true;
        closed = true;
        wake();
        onAbort();
      },
    },
    { highWaterMark: HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength },
  );
  // A plain field, not a getter: a getter in this per-response literal keeps the response's objects
  // alive through young-generation collections (docs/performance.md).
  const stream: { aborted: boolean } & SseStream = {
    aborted: false,
    write(...data: string[]) {
      if (closed || controller === undefined) return undefined;
      let text = '';
      for (const event of data) text += `data: ${event}\n\n`;
      controller.enqueue(encoder.encode(text));
      if ((controller.desiredSize ?? 0) > 0) return undefined;
      return new Promise<void>((resolve) => {
        resume = resolve;
      });
    },
  };
  void run(stream)
    .catch((error: unknown) => {
      (c as unknown as Context<AppEnv>).get('log').error({ err: error }, 'event stream failed');
    })
    .then((end) => {
      if (closed) return;
      closed = true;
      // Erroring the body makes the adapter drop the connection: a client that does not read would
      // otherwise hold its socket and what is queued for it forever.
      if (end === 'abandon') controller?.error(new Error('The client stopped reading'));
      else controller?.close();
    });
  // As Hono's streamSSE: chunked also tells @hono/node-server to send the head at once.
  c.header('Transfer-Encoding', 'chunked');
  c.header('Content-Type', 'text/event-stream');
  c.header('Cache-Control', 'no-cache');
  c.header('Connection', 'keep-alive');
  return c.body(body);
}
