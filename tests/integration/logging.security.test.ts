import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createKey } from '../../src/keys/keys.js';
import { issueCallerToken } from '../../src/signing/tokens.js';
import { createTenant } from '../../src/tenants/tenants.js';
import { createHarness, type Harness, type LogRecord } from '../support/harness.js';
import { trpc } from '../support/trpc.js';

/** Every salt, hash and key secret the gateway generates in this file, as they would be stored or shown. */
const generated = vi.hoisted(() => [] as string[]);

vi.mock('../../src/keys/format.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../../src/keys/format.js')>();
  return {
    ...original,
    newSalt: () => {
      const salt = original.newSalt();
      generated.push(salt.toString('base64'), salt.toString('hex'));
      return salt;
    },
    hashSecret: (...args: Parameters<typeof original.hashSecret>) => {
      const hash = original.hashSecret(...args);
      generated.push(hash.toString('base64'), hash.toString('hex'));
      return hash;
    },
    generateKey: (sandbox: boolean) => {
      const key = original.generateKey(sandbox);
      generated.push(key.secret);
      return key;
    },
  };
});

let harness: Harness;
let tenantId: string;
let member: string;

beforeAll(async () => {
  harness = await createHarness();
  tenantId = (await createTenant(harness.services, { name: 'Logs', tier: 2 })).id;
  member = (
    await issueCallerToken(harness.services, { role: 'member', tenantId, subject: 'dev', ttlSeconds: 600 })
  ).token;
});
afterAll(() => harness.close());

function expectNoSecrets(line: LogRecord) {
  const text = JSON.stringify(line);
  expect(generated.length).toBeGreaterThan(0);
  for (const value of generated) expect(text).not.toContain(value);
  expect(text).not.toMatch(/params|parameters|Failing row/);
}

describe('a failing database write in the logs', () => {
  it('a key insert the database refuses is logged with its cause, without the salt, hash or secret', async () => {
    // Break this file's own database: the insert of a key with this name violates a constraint,
    // whose message PostgreSQL completes with the whole failing row.
    await harness.db.execute(
      sql.raw(`alter table api_keys add constraint test_refuses_name check (name <> 'refused')`),
    );
    try {
      generated.length = 0;
      const before = harness.logs.length;
      const response = await trpc(harness, member, 'keys.create', { name: 'refused' }, 'POST');
      expect(response.status).toBe(500);
      expect(JSON.stringify(response.body)).not.toMatch(/params|test_refuses_name/);

      const line = harness.logs.slice(before).find((record) => record.msg === 'tRPC procedure failed');
      expect(line).toBeDefined();
      expectNoSecrets(line as LogRecord);
      const err = (
        line as { err: { message: string; stack: string; cause: { message: string; code: string } } }
      ).err;
      expect(err.message).toMatch(/^Failed query: insert into "api_keys"/);
      expect(err.stack).toContain('Failed query');
      expect(err.cause.message).toContain('violates check constraint "test_refuses_name"');
      expect(err.cause.code).toBe('23514');
    } finally {
      await harness.db.execute(sql.raw('alter table api_keys drop constraint test_refuses_name'));
    }
  });

  it('a NUL byte that reached the database is logged without the values the insert carried', async () => {
    generated.length = 0;
    const failure = await createKey(harness.services, tenantId, { name: 'nul\u0000byte' }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(Error);
    // The error itself carries the values; the log line must not.
    expect(JSON.stringify(failure)).toMatch(/params/);
    const before = harness.logs.length;
    harness.services.log.error({ err: failure }, 'write failed');
    const line = harness.logs[before] as LogRecord & { err: { message: string; cause?: unknown } };
    expectNoSecrets(line);
    expect(line.err.message).toMatch(/^Failed query: insert into "api_keys"/);
  });
});

describe('control characters in names and reasons', () => {
  it.each([
    ['keys.create', 'a NUL byte', () => ({ name: 'nul\u0000byte' })],
    ['keys.create', 'a BEL', () => ({ name: 'bell\u0007' })],
    ['keys.create', 'a line feed', () => ({ name: 'two\nlines' })],
    ['keys.create', 'a C1 control (NEL)', () => ({ name: 'c1\u0085control' })],
    ['keys.create', 'a DEL', () => ({ name: 'del\u007f' })],
    ['admin.tenants.create', 'a NUL byte', () => ({ name: 'nul\u0000byte', tier: 1 })],
    ['admin.tenants.create', 'a tab', () => ({ name: 'tab\there', tier: 1 })],
    ['admin.credits.grant', 'a NUL byte', () => ({ tenantId, amountMicro: '1', reason: 'nul\u0000byte' })],
    ['admin.credits.grant', 'an ESC', () => ({ tenantId, amountMicro: '1', reason: 'escape\u001b[31m' })],
  ])(
    '%s with %s in the name or reason is a 400 naming the field, and logs no failure',
    async (path, _, input) => {
      const body = input();
      const field = 'reason' in body ? 'reason' : 'name';
      const before = harness.logs.length;
      const response = await trpc(harness, harness.adminToken, path, { tenantId, ...body }, 'POST');
      expect(response.status).toBe(400);
      expect(response.body.error?.data.issues).toEqual([
        { path: field, message: expect.stringContaining('control characters') },
      ]);
      expect(harness.logs.slice(before).filter((line) => line.level === 'error')).toEqual([]);
    },
  );

  it('a reason may run over several lines and hold tabs; names may hold any printable text', async () => {
    const reason = 'line one\n\tline two\r\n';
    const grant = await trpc(
      harness,
      harness.adminToken,
      'admin.credits.grant',
      { tenantId, amountMicro: '1', reason },
      'POST',
    );
    expect(grant.status).toBe(200);
    const key = await trpc(harness, member, 'keys.create', { name: 'Zoë — “prod” 🔑' }, 'POST');
    expect(key.status).toBe(200);
  });
});
