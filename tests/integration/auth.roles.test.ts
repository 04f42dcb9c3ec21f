import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCallerToken, type Role } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness } from '../support/harness.js';

/** Who may call what: member (one tenant), operator (read-only admin), admin. */
let harness: Harness;
let tenantA: string;
let tenantB: string;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  harness = await createHarness();
  tenantA = (await createTenant(harness.services, { name: 'A', tier: 3 })).id;
  tenantB = (await createTenant(harness.services, { name: 'B', tier: 3 })).id;
  await harness.services.store.credit({ tenantId: tenantA, grantId: 'g1', amountMicro: 5_000_000n });
  const issue = async (role: Role, tenantId?: string) =>
    (
      await issueCallerToken(harness.services, {
        role,
        subject: `${role}-user`,
        ttlSeconds: 600,
        ...(tenantId === undefined ? {} : { tenantId }),
      })
    ).token;
  tokens.memberA = await issue('member', tenantA);
  tokens.operator = await issue('operator');
  tokens.admin = await issue('admin');
});
afterAll(() => harness.close());

function call(token: string | undefined, path: string, input?: unknown, method: 'GET' | 'POST' = 'GET') {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  if (method === 'POST') {
    return harness.request(`/trpc/${path}`, {
      method,
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify(input ?? {}),
    });
  }
  const query = input === undefined ? '' : `?input=${encodeURIComponent(JSON.stringify(input))}`;
  return harness.request(`/trpc/${path}${query}`, { headers });
}

describe('a member of tenant A', () => {
  it('reads its own balance without naming the tenant', async () => {
    const response = await call(tokens.memberA, 'billing.balance');
    expect(response.status).toBe(200);
    expect(((await response.json()) as { result: { data: unknown } }).result.data).toEqual({
      creditedMicro: '5000000',
      committedMicro: '0',
      reservedMicro: '0',
      availableMicro: '5000000',
    });
    expect((await call(tokens.memberA, 'billing.balance', { tenantId: tenantA })).status).toBe(200);
  });

  it('cannot see tenant B: not found, as if B did not exist', async () => {
    const response = await call(tokens.memberA, 'billing.balance', { tenantId: tenantB });
    expect(response.status).toBe(404);
    const unknown = await call(tokens.memberA, 'billing.balance', { tenantId: `ten_${'f'.repeat(32)}` });
    expect(unknown.status).toBe(404);
  });

  it.each([
    ['admin.tenants.list', 'GET'],
    ['admin.system.info', 'GET'],
    ['admin.tenants.create', 'POST'],
    ['admin.signingKeys.rotate', 'POST'],
  ] as const)('is forbidden from %s', async (path, method) => {
    const response = await call(
      tokens.memberA,
      path,
      method === 'POST' ? { name: 'X', tier: 1 } : undefined,
      method,
    );
    expect(response.status).toBe(403);
  });
});

describe('an operator', () => {
  it.each(['admin.tenants.list', 'admin.system.info', 'admin.signingKeys.list'])('reads %s', async (path) => {
    expect((await call(tokens.operator, path)).status).toBe(200);
  });

  it('reads any tenant’s balance by naming it', async () => {
    expect((await call(tokens.operator, 'billing.balance', { tenantId: tenantB })).status).toBe(200);
    expect((await call(tokens.operator, 'billing.balance')).status).toBe(400);
  });

  it.each([
    ['admin.tenants.create', { name: 'Op', tier: 1 }],
    ['admin.signingKeys.rotate', undefined],
    ['admin.tokens.issue', { role: 'admin' }],
  ])('cannot mutate: %s is forbidden and changes nothing', async (path, input) => {
    const keysBefore = harness.services.signing.list().length;
    const tenantsBefore = (await call(tokens.admin, 'admin.tenants.list').then((r) => r.json())) as unknown;
    expect((await call(tokens.operator, path, input, 'POST')).status).toBe(403);
    expect(harness.services.signing.list()).toHaveLength(keysBefore);
    expect(await call(tokens.admin, 'admin.tenants.list').then((r) => r.json())).toEqual(tenantsBefore);
  });
});

describe('an admin', () => {
  it('creates tenants, issues tokens and rotates keys', async () => {
    expect((await call(tokens.admin, 'admin.tenants.create', { name: 'C', tier: 5 }, 'POST')).status).toBe(
      200,
    );
    const issued = await call(
      tokens.admin,
      'admin.tokens.issue',
      { role: 'member', tenantId: tenantB },
      'POST',
    );
    expect(issued.status).toBe(200);
    const { token } = ((await issued.json()) as { result: { data: { token: string } } }).result.data;
    expect((await call(token, 'billing.balance')).status).toBe(200);
    expect((await call(tokens.admin, 'admin.signingKeys.rotate', undefined, 'POST')).status).toBe(200);
  });

  it('cannot issue a member token for a tenant that does not exist, or a token past the maximum lifetime', async () => {
    const missing = await call(
      tokens.admin,
      'admin.tokens.issue',
      { role: 'member', tenantId: `ten_${'e'.repeat(32)}` },
      'POST',
    );
    expect(missing.status).toBe(404);
    const tooLong = await call(
      tokens.admin,
      'admin.tokens.issue',
      { role: 'admin', ttlSeconds: 10 * 86_400 },
      'POST',
    );
    expect(tooLong.status).toBe(400);
  });
});

describe('nobody', () => {
  it.each(['admin.system.info', 'billing.balance', 'admin.signingKeys.list'])(
    'gets 401 from %s',
    async (path) => {
      expect((await call(undefined, path)).status).toBe(401);
    },
  );
});
