import { TRPCClientError } from '@trpc/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/client.js';
import { listTenants } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';
import { awayFromWindowEdge, freshAddress } from '../support/rate-window.js';
import { serve } from '../support/serve.js';

/** DESIGN.md §6: TRPC_MAX_BATCH (default 20) and the per-IP pre-auth limit (100/min) on /trpc. */

interface TrpcError {
  message: string;
  code: number;
  data: { code: string; httpStatus: number; appCode?: string; dimension?: string; retryAfterMs?: number };
}
type TrpcBody = { error: TrpcError } | { result: { data: unknown } }[] | { result: { data: unknown } };

interface Call {
  path: string;
  input?: unknown;
}

/** One batch request as tRPC's httpBatchLink sends it: paths joined by commas, inputs by index. */
async function batch(
  harness: Harness,
  from: string,
  method: 'GET' | 'POST',
  calls: Call[],
  authorization?: string,
): Promise<{ status: number; headers: Headers; body: TrpcBody }> {
  const paths = calls.map((call) => call.path).join(',');
  const inputs = Object.fromEntries(calls.map((call, index) => [String(index), call.input]));
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  const response =
    method === 'GET'
      ? await harness.requestFrom(
          from,
          `/trpc/${paths}?batch=1&input=${encodeURIComponent(JSON.stringify(inputs))}`,
          { headers },
        )
      : await harness.requestFrom(from, `/trpc/${paths}?batch=1`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify(inputs),
        });
  return { status: response.status, headers: response.headers, body: (await response.json()) as TrpcBody };
}

const creates = (count: number, prefix: string): Call[] =>
  Array.from({ length: count }, (_, index) => ({
    path: 'admin.tenants.create',
    input: { name: `${prefix}-${index}`, tier: 4 },
  }));
const lists = (count: number): Call[] =>
  Array.from({ length: count }, () => ({ path: 'admin.tenants.list' }));

async function tenantsNamed(harness: Harness, prefix: string): Promise<number> {
  return (await listTenants(harness.services)).filter((tenant) => tenant.name.startsWith(`${prefix}-`))
    .length;
}

describe('tRPC batches (TRPC_MAX_BATCH, default 20)', () => {
  let harness: Harness;
  let admin: string;
  beforeAll(async () => {
    harness = await createHarness();
    admin = `Bearer ${harness.adminToken}`;
  });
  afterAll(() => harness.close());

  it('a POST batch of 21 mutations is refused whole with 400 in tRPC error shape, and no call runs', async () => {
    const refused = await batch(harness, freshAddress(), 'POST', creates(21, 'over'), admin);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({
      error: { message: 'Batch call exceeds maximum size', data: { code: 'BAD_REQUEST', httpStatus: 400 } },
    });
    expect(await tenantsNamed(harness, 'over')).toBe(0);
  });

  it('a POST batch of exactly 20 mutations runs all 20', async () => {
    const accepted = await batch(harness, freshAddress(), 'POST', creates(20, 'exact'), admin);
    expect(accepted.status).toBe(200);
    expect(accepted.body).toHaveLength(20);
    expect(await tenantsNamed(harness, 'exact')).toBe(20);
  });

  it('a GET batch (comma-separated paths) of 21 queries is refused with 400; of 20 answers every call', async () => {
    const refused = await batch(harness, freshAddress(), 'GET', lists(21), admin);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: { data: { code: 'BAD_REQUEST', httpStatus: 400 } } });

    const accepted = await batch(harness, freshAddress(), 'GET', lists(20), admin);
    expect(accepted.status).toBe(200);
    expect(accepted.body).toHaveLength(20);
    expect(
      (accepted.body as { result: { data: unknown } }[]).every((item) => Array.isArray(item.result.data)),
    ).toBe(true);
  });

  it('the typed client sends 25 concurrent calls as batches the server accepts', async () => {
    const server = await serve(harness.app);
    try {
      const client = createClient({ url: server.url, token: harness.adminToken });
      const results = await Promise.all(Array.from({ length: 25 }, () => client.admin.tenants.list.query()));
      expect(results).toHaveLength(25);
    } finally {
      await server.close();
    }
  });
});

describe('TRPC_MAX_BATCH set to 3', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness({ config: { trpcMaxBatch: 3 } });
  });
  afterAll(() => harness.close());

  it('refuses a batch of 4 and accepts a batch of 3', async () => {
    const admin = `Bearer ${harness.adminToken}`;
    expect((await batch(harness, freshAddress(), 'POST', creates(4, 'four'), admin)).status).toBe(400);
    expect(await tenantsNamed(harness, 'four')).toBe(0);
    expect((await batch(harness, freshAddress(), 'POST', creates(3, 'three'), admin)).status).toBe(200);
    expect(await tenantsNamed(harness, 'three')).toBe(3);
  });
});

describe('/trpc with the production limits (pre-auth 100/min per IP, 20 failed authentications)', () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await createHarness({ limits: 'production' });
  });
  afterAll(() => harness.close());

  it('an oversized batch is refused before its bearer is looked at: its bad bearer never counts as a failure', async () => {
    await awayFromWindowEdge();
    const from = freshAddress();
    const statuses: number[] = [];
    for (let i = 0; i < 25; i += 1) {
      statuses.push((await batch(harness, from, 'GET', lists(21), 'Bearer not-a-token')).status);
    }
    expect(new Set(statuses)).toEqual(new Set([400]));
    // Had those bearers been checked, the 21st would have been refused: the budget is untouched.
    expect((await batch(harness, from, 'GET', lists(1), 'Bearer not-a-token')).status).toBe(401);
  });

  it('the 101st request a minute from one IP gets 429 in tRPC error shape with Retry-After; another IP is unaffected', async () => {
    await awayFromWindowEdge();
    const flooder = freshAddress();
    const statuses: number[] = [];
    for (let i = 0; i < 100; i += 1) {
      statuses.push((await batch(harness, flooder, 'GET', lists(20))).status);
    }
    expect(new Set(statuses)).toEqual(new Set([401]));

    const denied = await batch(harness, flooder, 'GET', lists(20));
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(denied.headers.get('ratelimit-limit')).toBe('100');
    expect(denied.body).toMatchObject({
      error: {
        data: {
          code: 'TOO_MANY_REQUESTS',
          httpStatus: 429,
          appCode: 'rate_limited',
          dimension: 'ip',
          requestId: denied.headers.get('x-request-id'),
        },
      },
    });
    // Even with a valid token: the limit comes before authentication.
    expect((await batch(harness, flooder, 'GET', lists(1), `Bearer ${harness.adminToken}`)).status).toBe(429);

    const other = freshAddress();
    expect((await batch(harness, other, 'GET', lists(1))).status).toBe(401);
    expect((await batch(harness, other, 'GET', lists(1), `Bearer ${harness.adminToken}`)).status).toBe(200);
  });

  it('the typed client reads the pre-auth refusal as a TRPCClientError with httpStatus 429', async () => {
    await awayFromWindowEdge();
    const server = await serve(harness.app);
    try {
      // The served app sees every call from the loopback bucket: spend its 100 requests, then one more.
      const client = createClient({ url: server.url });
      const errors: unknown[] = [];
      for (let i = 0; i < 101; i += 1) {
        errors.push(await client.admin.tenants.list.query().catch((error: unknown) => error));
      }
      const last = errors.at(-1);
      expect(last).toBeInstanceOf(TRPCClientError);
      expect((last as TRPCClientError<never>).data).toMatchObject({
        httpStatus: 429,
        code: 'TOO_MANY_REQUESTS',
      });
      expect((errors[0] as TRPCClientError<never>).data).toMatchObject({ httpStatus: 401 });
    } finally {
      await server.close();
    }
  });
});
