import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../support/harness.js';

let harness: Harness;
beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

const createBody = {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ name: 'Intruder', tier: 9 }),
};

describe('admin procedures without the admin token', () => {
  const badHeaders: [string, Record<string, string>][] = [
    ['no Authorization header', {}],
    ['a wrong bearer token', { authorization: `Bearer ${'x'.repeat(43)}` }],
    ['the token without the Bearer scheme', {}],
    ['Basic auth', { authorization: 'Basic YWRtaW46YWRtaW4=' }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ];

  it.each(badHeaders)('%s → 401 on a query', async (_, headers) => {
    const response = await harness.request('/trpc/admin.system.info', { headers });
    expect(response.status).toBe(401);
  });

  it.each(badHeaders)('%s → 401 on a mutation, and nothing is written', async (_, headers) => {
    const response = await harness.request('/trpc/admin.tenants.create', {
      ...createBody,
      headers: { ...createBody.headers, ...headers },
    });
    expect(response.status).toBe(401);
    const list = (await (await harness.adminRequest('/trpc/admin.tenants.list')).json()) as {
      result: { data: { name: string }[] };
    };
    expect(list.result.data.map((tenant) => tenant.name)).not.toContain('Intruder');
  });

  it('a token that only shares a prefix with the admin token is refused', async () => {
    const response = await harness.request('/trpc/admin.system.info', {
      headers: { authorization: `Bearer ${harness.adminToken.slice(0, -1)}` },
    });
    expect(response.status).toBe(401);
  });

  it('the bare token (no scheme) is refused', async () => {
    const response = await harness.request('/trpc/admin.system.info', {
      headers: { authorization: harness.adminToken },
    });
    expect(response.status).toBe(401);
  });

  it('the right token is accepted', async () => {
    const response = await harness.adminRequest('/trpc/admin.system.info');
    expect(response.status).toBe(200);
  });

  it('error responses carry no stack trace', async () => {
    const response = await harness.request('/trpc/admin.system.info');
    const text = await response.text();
    expect(text).not.toContain('stack');
    expect(text).not.toMatch(/\.ts:\d+/);
  });
});
