import type { ServerResponse } from 'node:http';
import type { Context } from 'hono';
import { type AppEnv, nodeOutgoing } from './context.js';
import { sent, writeHead } from './node-reply.js';

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
  /** The route's own headers (rate limits, pool used). */
  headers: Readonly<Record<string, string>> = {},
): Response {
  const outgoing = nodeOutgoing(c);
  if (outgoing !== undefined)
    return nodeEventStream(c as unknown as Context<AppEnv>, outgoing, run, onAbort, headers);
  for (const [name, value] of Object.entries(headers)) c.header(name, value);
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
  for (const [name, value] of Object.entries(EVENT_STREAM_HEADERS)) c.header(name, value);
  return c.body(body);
}

const EVENT_STREAM_HEADERS: Readonly<Record<string, string>> = {
  'Transfer-Encoding': 'chunked',
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
};

/**
 * The same stream written straight into Node's response (node-reply.ts): each write one
 * `outgoing.write` of the events as a string (Node encodes it), a promise only when the socket's
 * buffer is past its high-water mark (until 'drain'); the head sent at once, as the adapter does.
 */
function nodeEventStream(
  c: Context<AppEnv>,
  outgoing: ServerResponse,
  run: (stream: SseStream) => Promise<'abandon' | undefined>,
  onAbort: () => void,
  headers: Readonly<Record<string, string>>,
): Response {
  let resume: (() => void) | undefined;
  let closed = false;
  const wake = () => {
    const waiting = resume;
    resume = undefined;
    waiting?.();
  };
  // A plain field, not a getter (see above).
  let wrote = false;
  const stream: { aborted: boolean } & SseStream = {
    aborted: false,
    write(...data: string[]) {
      if (closed) return undefined;
      wrote = true;
      let text = '';
      for (const event of data) text += `data: ${event}\n\n`;
      if (outgoing.write(text)) return undefined;
      return new Promise<void>((resolve) => {
        resume = resolve;
      });
    },
  };
  outgoing.on('drain', wake);
  outgoing.once('close', () => {
    // Closed before the end was written: the client went away.
    if (closed || outgoing.writableFinished) return;
    stream.aborted = true;
    closed = true;
    wake();
    onAbort();
  });
  writeHead(c, outgoing, 200, headers, EVENT_STREAM_HEADERS);
  // The head goes out with the first events when they are already here (one write, not two), and
  // on its own by the end of this turn of the event loop when they are not.
  setImmediate(() => {
    if (!wrote && !closed) outgoing.flushHeaders();
  });
  void run(stream)
    .catch((error: unknown) => {
      c.get('log').error({ err: error }, 'event stream failed');
    })
    .then((end) => {
      if (closed) return;
      closed = true;
      // A client that does not read would otherwise hold its socket and what is queued for it.
      if (end === 'abandon') outgoing.destroy();
      else outgoing.end();
    });
  return sent(c, 200);
}
