import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCRIPTS } from '../../src/store/scripts.generated.js';
import { CONTRACT_VERSION, VERSION } from '../../src/version.js';
import { createHarness, type Harness } from '../support/harness.js';

let harness: Harness;
beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

describe('GET /health', () => {
  it('answers with the version, the contract version and the scripts with their SHA-1s', async () => {
    const response = await harness.request('/health');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: 'ok',
      version: VERSION,
      contractVersion: CONTRACT_VERSION,
      scripts: Object.values(SCRIPTS).map(({ name, version, sha1 }) => ({ name, version, sha1 })),
      signing: { activeKid: expect.any(String), activeKeyAgeDays: 0, warning: null },
    });
  });
});

describe('GET /ready', () => {
  it('pings the store and the database and names their engines', async () => {
    const response = await harness.request('/ready');
    expect(response.status).toBe(200);
    const body = await response.json();
    expect(body).toMatchObject({
      status: 'ready',
      checks: {
        store: { ok: true, engine: 'redis' },
        database: { ok: true, engine: harness.services.engines.db },
      },
    });
  });
});

describe('request id', () => {
  it('generates one when the caller sends none', async () => {
    const response = await harness.request('/health');
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('keeps a well-formed incoming X-Request-Id', async () => {
    const response = await harness.request('/health', { headers: { 'x-request-id': 'trace-abc_123=' } });
    expect(response.headers.get('x-request-id')).toBe('trace-abc_123=');
  });

  it.each([
    ['characters outside [A-Za-z0-9_=-]', 'abc def<script>'],
    ['more than 128 characters', 'a'.repeat(129)],
  ])('replaces an incoming id with %s', async (_, incoming) => {
    const response = await harness.request('/health', { headers: { 'x-request-id': incoming } });
    const id = response.headers.get('x-request-id');
    expect(id).not.toBe(incoming);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('puts the id in the error body and in the access log line', async () => {
    const response = await harness.request('/nope', { headers: { 'x-request-id': 'corr-42' } });
    const body = (await response.json()) as { error: { requestId: string } };
    expect(body.error.requestId).toBe('corr-42');
    const line = harness.logs.find((record) => record.msg === 'request' && record.requestId === 'corr-42');
    expect(line).toMatchObject({ method: 'GET', path: '/nope', status: 404, service: 'spicegate' });
  });
});

describe('security headers', () => {
  it('are on every response, success and error alike', async () => {
    for (const path of ['/health', '/nope', '/trpc/admin.system.info']) {
      const headers = (await harness.request(path)).headers;
      expect(headers.get('strict-transport-security')).toMatch(/max-age=\d+/);
      expect(headers.get('x-content-type-options')).toBe('nosniff');
      expect(headers.get('referrer-policy')).toBe('no-referrer');
      expect(headers.get('x-frame-options')).toBe('DENY');
      const csp = headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("frame-ancestors 'none'");
    }
  });
});

describe('logs', () => {
  it('never carry the authorization header', async () => {
    await harness.adminRequest('/trpc/admin.system.info');
    const text = JSON.stringify(harness.logs);
    expect(text).toContain('admin.system.info');
    expect(text).not.toContain(harness.adminToken);
  });
});
