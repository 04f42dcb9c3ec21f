import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../support/harness.js';

let harness: Harness;
beforeAll(async () => {
  harness = await createHarness();
});
afterAll(() => harness.close());

interface TrpcError {
  error: {
    code: number;
    message: string;
    data: {
      code: string;
      httpStatus: number;
      requestId?: string;
      issues?: { path: string; message: string }[];
    };
  };
}

function mutate(path: string, input: unknown) {
  return harness.adminRequest(`/trpc/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(input),
  });
}

describe('tRPC input validation', () => {
  it.each([
    ['an empty name', { name: '   ', tier: 3 }, 'name'],
    ['a tier out of range', { name: 'Acme', tier: 10 }, 'tier'],
    ['a fractional tier', { name: 'Acme', tier: 2.5 }, 'tier'],
    ['a tier as a string', { name: 'Acme', tier: '3' }, 'tier'],
    ['a missing name', { tier: 3 }, 'name'],
  ])('answers 400 with the issues for %s', async (_, input, field) => {
    const response = await mutate('admin.tenants.create', input);
    expect(response.status).toBe(400);
    const body = (await response.json()) as TrpcError;
    expect(body.error.data.code).toBe('BAD_REQUEST');
    expect(body.error.data.issues?.map((issue) => issue.path)).toContain(field);
    expect(body.error.message).toContain(field);
    expect(body.error.data.requestId).toBe(response.headers.get('x-request-id'));
  });

  it('changes nothing when the input is refused', async () => {
    const before = await harness.adminRequest('/trpc/admin.tenants.list');
    await mutate('admin.tenants.create', { name: 'Ghost', tier: 0 });
    const after = await harness.adminRequest('/trpc/admin.tenants.list');
    expect(await after.json()).toEqual(await before.json());
  });

  it('answers 400 for a body that is not JSON', async () => {
    const response = await harness.adminRequest('/trpc/admin.tenants.create', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name": ',
    });
    expect(response.status).toBe(400);
  });

  it('answers 400 for a malformed tenant id', async () => {
    const input = encodeURIComponent(JSON.stringify({ id: "ten_'; drop table tenants; --" }));
    const response = await harness.adminRequest(`/trpc/admin.tenants.get?input=${input}`);
    expect(response.status).toBe(400);
  });
});

describe('domain errors through tRPC', () => {
  it('an unknown tenant is 404 NOT_FOUND with the app code', async () => {
    const input = encodeURIComponent(JSON.stringify({ id: `ten_${'0'.repeat(32)}` }));
    const response = await harness.adminRequest(`/trpc/admin.tenants.get?input=${input}`);
    expect(response.status).toBe(404);
    const body = (await response.json()) as TrpcError & { error: { data: { appCode?: string } } };
    expect(body.error.data).toMatchObject({ code: 'NOT_FOUND', appCode: 'not_found' });
  });

  it('an unknown procedure is 404', async () => {
    const response = await harness.adminRequest('/trpc/admin.nothing.here');
    expect(response.status).toBe(404);
  });

  it('a query called as a mutation is refused with a 4xx', async () => {
    const response = await mutate('admin.system.info', {});
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });
});
