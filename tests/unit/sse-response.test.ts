import { request } from 'node:http';
import { Hono } from 'hono';
import { afterEach, describe, expect, it } from 'vitest';
import type { AppEnv } from '../../src/http/context.js';
import { sseResponse } from '../../src/http/sse.js';
import { createLogger } from '../../src/observability/logger.js';
import { serve } from '../support/serve.js';

/** sseResponse: the one ReadableStream both SSE routes write into. */
function app(run: Parameters<typeof sseResponse>[1], onAbort = () => {}) {
  const hono = new Hono<AppEnv>();
  hono.use((c, next) => {
    c.set('log', createLogger({ level: 'silent' }));
    c.set('requestId', 'test');
    return next();
  });
  hono.get('/', (c) => sseResponse(c, run, onAbort));
  return hono;
}

describe('sseResponse', () => {
  it('writes one event per data, then ends the body', async () => {
    const response = await app(async (stream) => {
      stream.write('{"a":1}', '{"b":2}');
      stream.write('[DONE]');
    }).request('/');
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    expect(await response.text()).toBe('data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n');
  });

  it('asks the writer to wait only when the client is not keeping up, and resumes it', async () => {
    let waits = 0;
    const response = await app(async (stream) => {
      for (let i = 0; i < 200; i += 1) {
        const wait = stream.write(`"${'x'.repeat(1000)}"`);
        if (wait !== undefined) {
          waits += 1;
          await wait;
        }
      }
    }).request('/');
    // Nobody reads yet: the writer waits at the high-water mark instead of queueing all 200 KB.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(waits).toBe(1);
    expect((await response.text()).split('\n\n').length - 1).toBe(200);
    expect(waits).toBeGreaterThan(1);
  });

  it("drops the connection of a client that stopped reading ('abandon'), and reports a cancel", async () => {
    const abandoned = await app(async (stream) => {
      stream.write('"first"');
      return 'abandon';
    }).request('/');
    await expect(abandoned.text()).rejects.toThrow();

    let aborted = 0;
    let writes = 0;
    const cancelled = await app(
      async (stream) => {
        while (!stream.aborted) {
          writes += 1;
          await (stream.write('"tick"') ?? new Promise((resolve) => setTimeout(resolve, 1)));
        }
      },
      () => {
        aborted += 1;
      },
    ).request('/');
    const reader = cancelled.body?.getReader();
    await reader?.read();
    await reader?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(aborted).toBe(1);
    const after = writes;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(writes).toBe(after);
  });
});

/** The same over a real socket: on Node the events are written straight into Node's response. */
describe('sseResponse on Node (written into the ServerResponse)', () => {
  const served: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const server of served.splice(0)) await server.close();
  });
  const on = async (run: Parameters<typeof sseResponse>[1], onAbort = () => {}) => {
    const server = await serve(app(run, onAbort));
    served.push(server);
    return server.url;
  };

  it('writes one event per data, then ends the body, with the head the fetch path sends', async () => {
    const url = await on(async (stream) => {
      stream.write('{"a":1}', '{"b":2}');
      stream.write('[DONE]');
    });
    const response = await fetch(url);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(await response.text()).toBe('data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n');
  });

  it('sends the head at once even before the first event', async () => {
    let release: () => void = () => {};
    const url = await on(async (stream) => {
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      stream.write('"late"');
    });
    const response = await fetch(url);
    expect(response.status).toBe(200);
    release();
    expect(await response.text()).toBe('data: "late"\n\n');
  });

  it('asks the writer to wait while the socket is full, and resumes it once read', async () => {
    let waits = 0;
    let written = 0;
    const events = 200;
    const url = await on(async (stream) => {
      for (let i = 0; i < events; i += 1) {
        const wait = stream.write(`"${'x'.repeat(100_000)}"`);
        written += 1;
        if (wait !== undefined) {
          waits += 1;
          await wait;
        }
      }
    });
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const received = await new Promise<number>((resolve, reject) => {
      request(url, async (res) => {
        res.pause();
        // Nobody reads: once the socket's buffers are full the writer waits, short of 20 MB.
        await sleep(100);
        const stuckAt = written;
        await sleep(100);
        expect(written).toBe(stuckAt);
        expect(written).toBeLessThan(events);
        expect(waits).toBeGreaterThan(0);
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve(text.split('\n\n').length - 1));
        res.resume();
      })
        .on('error', reject)
        .end();
    });
    expect(received).toBe(events);
  });

  it("drops the connection of a client that stopped reading ('abandon'), and reports a client that left", async () => {
    const abandoned = await on(async (stream) => {
      stream.write('"first"');
      return 'abandon';
    });
    await expect((await fetch(abandoned)).text()).rejects.toThrow();

    let aborted = 0;
    let writes = 0;
    const url = await on(
      async (stream) => {
        while (!stream.aborted) {
          writes += 1;
          await (stream.write('"tick"') ?? new Promise((resolve) => setTimeout(resolve, 1)));
        }
      },
      () => {
        aborted += 1;
      },
    );
    const leaving = new AbortController();
    const response = await fetch(url, { signal: leaving.signal });
    await response.body?.getReader().read();
    leaving.abort();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(aborted).toBe(1);
    const after = writes;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(writes).toBe(after);
  });
});
