import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import type { AppEnv } from '../../src/http/context.js';
import { sseResponse } from '../../src/http/sse.js';
import { createLogger } from '../../src/observability/logger.js';

/** sseResponse: the one ReadableStream both SSE routes write into. */
function app(run: Parameters<typeof sseResponse>[1], onAbort = () => {}) {
  const hono = new Hono<AppEnv>();
  hono.use((c, next) => {
    c.set('log', createLogger({ level: 'silent' }));
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
