import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { createHarness, type Harness } from '../support/harness.js';

let harness: Harness;
beforeAll(async () => {
  harness = await createHarness({ config: { maxBodyBytes: 64 * 1024 } });
  // Routes that fail on purpose, added to this file's own app only.
  harness.app.get('/__test/crash', () => {
    throw new Error('database password is hunter2');
  });
  harness.app.get('/__test/refuse', () => {
    throw new AppError('rate_limited', 'Slow down', { dimension: 'tenant', retryAfterMs: 1500 });
  });
});
afterAll(() => harness.close());

interface ErrorBody {
  error: { code: string; message: string; requestId: string } & Record<string, unknown>;
}

describe('unknown routes', () => {
  it('answer 404 in the error shape', async () => {
    const response = await harness.request('/nope');
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toContain('application/json');
    const body = (await response.json()) as ErrorBody;
    expect(body).toEqual({
      error: {
        code: 'not_found',
        message: 'No route for GET /nope',
        requestId: response.headers.get('x-request-id'),
      },
    });
  });
});

describe('body size limit', () => {
  const tooBig = 'x'.repeat(64 * 1024 + 1);

  it('refuses a body with a Content-Length over MAX_BODY_BYTES with 413', async () => {
    const response = await harness.request('/trpc/admin.tenants.create', { method: 'POST', body: tooBig });
    expect(response.status).toBe(413);
    const body = (await response.json()) as ErrorBody;
    expect(body.error).toMatchObject({ code: 'payload_too_large', maxBytes: 64 * 1024 });
  });

  it('refuses an oversized chunked body (no Content-Length) with 413 before authentication', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(16 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 8) return controller.close();
        sent += 1;
        controller.enqueue(chunk);
      },
    });
    const response = await harness.request('/trpc/admin.tenants.create', {
      method: 'POST',
      body: stream,
      headers: { 'content-type': 'application/json' },
      duplex: 'half',
    } as RequestInit);
    // Without the limit this anonymous request would have been a 401.
    expect(response.status).toBe(413);
    expect(((await response.json()) as ErrorBody).error.code).toBe('payload_too_large');
  });

  it('lets a body at the limit through', async () => {
    const response = await harness.request('/nope', { method: 'POST', body: 'x'.repeat(64 * 1024) });
    expect(response.status).toBe(404);
  });
});

describe('errors thrown by handlers', () => {
  it('an AppError keeps its status, code and details', async () => {
    const response = await harness.request('/__test/refuse');
    expect(response.status).toBe(429);
    const body = (await response.json()) as ErrorBody;
    expect(body.error).toMatchObject({
      code: 'rate_limited',
      message: 'Slow down',
      dimension: 'tenant',
      retryAfterMs: 1500,
    });
  });

  it('anything else is a 500 with a generic message: no stack, no detail, but logged', async () => {
    const response = await harness.request('/__test/crash');
    expect(response.status).toBe(500);
    const text = await response.text();
    expect(JSON.parse(text)).toEqual({
      error: {
        code: 'internal_error',
        message: 'Internal error',
        requestId: response.headers.get('x-request-id'),
      },
    });
    expect(text).not.toContain('hunter2');
    expect(text).not.toMatch(/at .*\.ts/);
    const logged = harness.logs.find((record) => record.msg === 'unhandled error');
    expect(JSON.stringify(logged)).toContain('hunter2');
  });
});
