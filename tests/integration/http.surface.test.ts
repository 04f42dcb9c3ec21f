import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerClientErrors } from '../../src/http/client-error.js';
import { SECURITY_HEADERS } from '../../src/http/middleware.js';
import { createKey } from '../../src/keys/keys.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, createHarnessOnOwnRedis, type Harness } from '../support/harness.js';

/**
 * The HTTP surface outside the happy paths: every raw failure in the one error shape
 * (`{"error":{"code","message","requestId",…}}`), the OpenAI routes in OpenAI's shape with the
 * request id in `X-Request-Id`, 405 with `Allow`, 415, invalid JSON, Retry-After on every 503,
 * and requests Node's parser refuses before the app runs.
 */

interface RawError {
  error: { code: string; message: string; requestId: string } & Record<string, unknown>;
}
interface OpenAiErrorBody {
  error: { message: string; type: string; param: null; code: string };
}

const MAX_BODY_BYTES = 4 * 1024;
const METRICS_TOKEN = 'metrics-secret-token';

function expectSecurityHeaders(headers: Headers | Record<string, unknown>): void {
  for (const [name, value] of SECURITY_HEADERS) {
    const actual = headers instanceof Headers ? headers.get(name) : headers[name.toLowerCase()];
    expect(actual, name).toBe(value);
  }
}

async function expectRawError(response: Response, status: number, code: string): Promise<RawError> {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toContain('application/json');
  const body = (await response.json()) as RawError;
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.requestId).toBe(response.headers.get('x-request-id'));
  expect(body.error.requestId).toMatch(/^[\w-]{8,}$/);
  expectSecurityHeaders(response.headers);
  return body;
}

async function expectOpenAiError(response: Response, status: number, code: string): Promise<OpenAiErrorBody> {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toContain('application/json');
  const body = (await response.json()) as OpenAiErrorBody;
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(body.error.code).toBe(code);
  expect(response.headers.get('x-request-id')).toMatch(/^[\w-]{8,}$/);
  expectSecurityHeaders(response.headers);
  return body;
}

let harness: Harness;
let key: string;
const auth = () => ({ authorization: `Bearer ${key}` });
const json = (body: unknown) => JSON.stringify(body);

beforeAll(async () => {
  harness = await createHarness({ config: { maxBodyBytes: MAX_BODY_BYTES, metricsToken: METRICS_TOKEN } });
  // Tier 7: a burst bucket of 10, so the few admitted requests here never meet a rate limit.
  const tenant = await createTenant(harness.services, { name: 'Surface', tier: 7 });
  await harness.services.store.credit({ tenantId: tenant.id, grantId: 'g', amountMicro: 1_000_000n });
  key = (await createKey(harness.services, tenant.id, { name: 'surface' })).key;
});
afterAll(() => harness.close());

describe('one error shape on every raw route', () => {
  const cases: {
    name: string;
    path: string;
    init?: () => RequestInit;
    status: number;
    code: string;
    allow?: string;
  }[] = [
    { name: 'an unknown path', path: '/nope', status: 404, code: 'not_found' },
    { name: 'key info without a key', path: '/api/v1/key', status: 401, code: 'unauthorized' },
    { name: 'metrics without its token', path: '/metrics', status: 401, code: 'unauthorized' },
    {
      name: 'inference without a key',
      path: '/api/v1/inference',
      init: () => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }),
      status: 401,
      code: 'unauthorized',
    },
    {
      name: 'a body over MAX_BODY_BYTES',
      path: '/api/v1/inference',
      init: () => ({ method: 'POST', body: 'x'.repeat(MAX_BODY_BYTES + 1) }),
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'GET on the inference route',
      path: '/api/v1/inference',
      status: 405,
      code: 'method_not_allowed',
      allow: 'POST',
    },
    {
      name: 'DELETE on the inference route',
      path: '/api/v1/inference',
      init: () => ({ method: 'DELETE', headers: auth() }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'POST',
    },
    {
      name: 'POST on /health',
      path: '/health',
      init: () => ({ method: 'POST' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'POST on /ready',
      path: '/ready',
      init: () => ({ method: 'POST' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'PUT on /metrics',
      path: '/metrics',
      init: () => ({ method: 'PUT' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'POST on the JWKS',
      path: '/.well-known/jwks.json',
      init: () => ({ method: 'POST' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'POST on key info',
      path: '/api/v1/key',
      init: () => ({ method: 'POST', headers: auth() }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'OPTIONS on a tRPC procedure',
      path: '/trpc/admin.tenants.list',
      init: () => ({ method: 'OPTIONS' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD, POST',
    },
    {
      name: 'PUT on a tRPC procedure',
      path: '/trpc/keys.create',
      init: () => ({ method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD, POST',
    },
    {
      name: 'inference with a text/plain body',
      path: '/api/v1/inference',
      init: () => ({
        method: 'POST',
        headers: { ...auth(), 'content-type': 'text/plain' },
        body: json({ prompt: 'hi' }),
      }),
      status: 415,
      code: 'unsupported_media_type',
    },
    {
      name: 'inference with a body that is not JSON',
      path: '/api/v1/inference',
      init: () => ({
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json' },
        body: '{"prompt": ',
      }),
      status: 400,
      code: 'invalid_request',
    },
  ];

  for (const { name, path, init, status, code, allow } of cases) {
    it(`${name}: ${status} ${code} with a requestId and the security headers`, async () => {
      const response = await harness.request(path, init?.());
      await expectRawError(response, status, code);
      if (allow !== undefined) expect(response.headers.get('allow')).toBe(allow);
    });
  }

  it('HEAD on a GET route is served, and an unknown path stays 404 whatever the method', async () => {
    expect((await harness.request('/health', { method: 'HEAD' })).status).toBe(200);
    await expectRawError(await harness.request('/nope', { method: 'DELETE' }), 404, 'not_found');
    // Routes are matched exactly: a trailing slash is another path.
    await expectRawError(await harness.request('/health/', { method: 'POST' }), 404, 'not_found');
  });
});

describe('the OpenAI-compatible routes keep OpenAI’s shape, with the request id in X-Request-Id', () => {
  const cases: {
    name: string;
    path: string;
    init?: () => RequestInit;
    status: number;
    code: string;
    allow?: string;
  }[] = [
    { name: 'an unknown /v1 path', path: '/v1/nope', status: 404, code: 'not_found' },
    {
      name: 'GET on chat completions',
      path: '/v1/chat/completions',
      init: () => ({ headers: auth() }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'POST',
    },
    {
      name: 'POST on models',
      path: '/v1/models',
      init: () => ({ method: 'POST', headers: auth() }),
      status: 405,
      code: 'method_not_allowed',
      allow: 'GET, HEAD',
    },
    {
      name: 'a body over MAX_BODY_BYTES',
      path: '/v1/chat/completions',
      init: () => ({ method: 'POST', headers: auth(), body: 'x'.repeat(MAX_BODY_BYTES + 1) }),
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'a form-encoded body (curl -d without a Content-Type)',
      path: '/v1/chat/completions',
      init: () => ({
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/x-www-form-urlencoded' },
        body: json({ model: 'cheap', messages: [{ role: 'user', content: 'hi' }] }),
      }),
      status: 415,
      code: 'unsupported_media_type',
    },
    {
      name: 'a body that is not JSON',
      path: '/v1/chat/completions',
      init: () => ({
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json' },
        body: 'nope',
      }),
      status: 400,
      code: 'invalid_request',
    },
  ];

  for (const { name, path, init, status, code, allow } of cases) {
    it(`${name}: ${status} ${code}`, async () => {
      const response = await harness.request(path, init?.());
      const body = await expectOpenAiError(response, status, code);
      expect(body.error.type).toBe(status === 404 ? 'not_found_error' : 'invalid_request_error');
      if (allow !== undefined) expect(response.headers.get('allow')).toBe(allow);
    });
  }
});

describe('JSON bodies', () => {
  it('a body that does not parse is 400 "invalid JSON", not a schema message about undefined', async () => {
    for (const body of ['{"prompt": ', '', 'prompt=hi']) {
      const response = await harness.request('/api/v1/inference', {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json' },
        body,
      });
      const error = (await expectRawError(response, 400, 'invalid_request')).error;
      expect(error.message).toBe('Invalid request: invalid JSON');
    }
    const openAi = await harness.request('/v1/chat/completions', {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: '{"model": "cheap", ',
    });
    expect((await expectOpenAiError(openAi, 400, 'invalid_request')).error.message).toBe(
      'Invalid request: invalid JSON',
    );
  });

  it('valid JSON that fails the schema still names the field', async () => {
    const response = await harness.request('/api/v1/inference', {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: json({ prompt: 'hi', max_tokens: 'many' }),
    });
    const error = (await expectRawError(response, 400, 'invalid_request')).error;
    expect(error.message).toContain('max_tokens');
  });

  it('refuses any other declared content type with 415, and names it', async () => {
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
    ]) {
      const response = await harness.request('/api/v1/inference', {
        method: 'POST',
        headers: { ...auth(), 'content-type': type },
        body: json({ prompt: 'hi', max_tokens: 1 }),
      });
      const error = (await expectRawError(response, 415, 'unsupported_media_type')).error;
      expect(error.contentType).toBe(type);
    }
  });

  it('accepts application/json in any case, with parameters, or no Content-Type at all', async () => {
    const body = json({ prompt: 'hi', max_tokens: 1 });
    for (const type of ['application/json', 'Application/JSON; charset=utf-8', undefined]) {
      const response = await harness.request('/api/v1/inference', {
        method: 'POST',
        headers: type === undefined ? auth() : { ...auth(), 'content-type': type },
        // Bytes, so the request carries no Content-Type of its own (a string body would be text/plain).
        body: new TextEncoder().encode(body),
      });
      expect(response.status, String(type)).toBe(200);
      expect(await response.text()).toContain('"type":"done"');
    }
  });
});

describe('Retry-After on every 503', () => {
  let own: Awaited<ReturnType<typeof createHarnessOnOwnRedis>>;
  let ownKey: string;
  let tenantId: string;
  beforeAll(async () => {
    own = await createHarnessOnOwnRedis();
    const tenant = await createTenant(own.services, { name: 'Outage', tier: 4 });
    tenantId = tenant.id;
    await own.services.store.credit({ tenantId, grantId: 'g', amountMicro: 1_000_000n });
    ownKey = (await createKey(own.services, tenant.id, { name: 'outage' })).key;
    // Verified once while the store is up, so the refusal below comes from admission.
    expect(
      (await own.request('/api/v1/key', { headers: { authorization: `Bearer ${ownKey}` } })).status,
    ).toBe(200);
  });
  afterAll(() => own.close());

  it('store_unavailable (native, OpenAI and tRPC) and /ready carry Retry-After while Redis is frozen', async () => {
    own.redis.process.kill('SIGSTOP');
    try {
      const native = await own.request('/api/v1/inference', {
        method: 'POST',
        headers: { authorization: `Bearer ${ownKey}`, 'content-type': 'application/json' },
        body: json({ prompt: 'hi', max_tokens: 1 }),
      });
      await expectRawError(native, 503, 'store_unavailable');
      expect(native.headers.get('retry-after')).toBe('1');

      const openAi = await own.request('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${ownKey}`, 'content-type': 'application/json' },
        body: json({ model: 'cheap', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }),
      });
      await expectOpenAiError(openAi, 503, 'store_unavailable');
      expect(openAi.headers.get('retry-after')).toBe('1');

      const ready = await own.request('/ready');
      await expectRawError(ready, 503, 'not_ready');
      expect(ready.headers.get('retry-after')).toBe('1');

      const input = encodeURIComponent(JSON.stringify({ tenantId }));
      const balance = await own.adminRequest(`/trpc/billing.balance?input=${input}`);
      expect(balance.status).toBe(503);
      expect(balance.headers.get('retry-after')).toBe('1');
    } finally {
      own.redis.process.kill('SIGCONT');
    }
  });

  it('answers without Retry-After once the store is back', async () => {
    const ready = await own.request('/ready');
    expect(ready.status).toBe(200);
    expect(ready.headers.get('retry-after')).toBeNull();
  });
});

describe('requests Node refuses before the app runs', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createAdaptorServer({ fetch: harness.app.fetch }) as Server;
    answerClientErrors(server, harness.services.log);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );

  it('a URL over the header limit gets 431 in the error shape, with a request id and the security headers', async () => {
    const path = `/health?pad=${'x'.repeat(20 * 1024)}`;
    const answer = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
      (resolve, reject) => {
        const request = httpRequest({ host: '127.0.0.1', port, path }, (response) => {
          let body = '';
          response.setEncoding('utf8').on('data', (chunk: string) => {
            body += chunk;
          });
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
          );
        });
        request.on('error', reject);
        request.end();
      },
    );
    expect(answer.status).toBe(431);
    expect(answer.headers['content-type']).toBe('application/json');
    expect(answer.headers.connection).toBe('close');
    const body = JSON.parse(answer.body) as RawError;
    expect(body.error).toEqual({
      code: 'headers_too_large',
      message: 'The request line and headers exceed the server limit',
      requestId: answer.headers['x-request-id'],
    });
    expectSecurityHeaders(answer.headers);
    expect(harness.logs.some((line) => line.msg === 'request refused by the HTTP parser')).toBe(true);
  });

  it('malformed HTTP gets 400 in the error shape and the connection is closed', async () => {
    const socket = connect(port, '127.0.0.1');
    socket.end('NOT HTTP AT ALL\r\n\r\n');
    let text = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
    });
    await new Promise((resolve) => socket.on('close', resolve));
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as RawError;
    expect(body.error).toMatchObject({ code: 'invalid_request', message: 'Malformed HTTP request' });
    expect(text).toContain(`X-Request-Id: ${body.error.requestId}\r\n`);
    expect(text).toContain('X-Content-Type-Options: nosniff\r\n');
  });
});
