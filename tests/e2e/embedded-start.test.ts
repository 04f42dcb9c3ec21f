import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayProcess, spawnSpicegate } from '../support/gateway-process.js';

const run = promisify(execFile);

describe('spicegate serve with a bad configuration', () => {
  it('PORT=abc exits 2 with one line naming PORT', async () => {
    const gateway = spawnSpicegate(['serve'], { PORT: 'abc' });
    const { code } = await gateway.exited;
    expect(code).toBe(2);
    const lines = gateway.stderr().trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^spicegate: invalid configuration: PORT /);
    expect(gateway.stderr()).not.toMatch(/\bat .*:\d+:\d+/);
  });
});

describe('spicegate serve with settings whose features have not landed', () => {
  it('logs one warning naming each such variable that is set', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'sg-inert-'));
    const gateway = spawnSpicegate(['serve'], {
      PORT: '0',
      DATA_DIR: dataDir,
      NATS_URL: 'nats://127.0.0.1:4222',
      OTEL_ENABLED: 'true',
      NOWPAYMENTS_IPN_SECRET: 'an-ipn-secret',
    });
    try {
      // NATS_URL is the last of them: the warnings come in one go, after 'listening'.
      await gateway.waitForLog('NATS_URL is set but not yet in effect: its feature is not built');
      const warned = gateway.lines
        .filter((line) => line.level === 'warn' && typeof line.variable === 'string')
        .map((line) => line.variable);
      // NOWPAYMENTS_IPN_SECRET is in effect now (payments): set, it is not warned about, nor shown.
      expect(warned).toEqual(['OTEL_ENABLED', 'NATS_URL']);
      // The warning names the variable, never its value (a secret).
      expect(JSON.stringify(gateway.lines)).not.toContain('an-ipn-secret');
    } finally {
      gateway.kill();
      await gateway.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('spicegate serve on embedded defaults (PGlite + memory store)', () => {
  let dataDir: string;
  let gateway: GatewayProcess;
  let url: string;
  let moduleLog: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'sg-embedded-'));
    // Every module the server loads is listed in MODULE_LOG (outside DATA_DIR, which has a test of its own).
    moduleLog = join(await mkdtemp(join(tmpdir(), 'sg-modules-')), 'loaded.txt');
    gateway = spawnSpicegate(['serve'], {
      PORT: '0',
      DATA_DIR: dataDir,
      NODE_OPTIONS: `--import ${new URL('./record-module-loads.mjs', import.meta.url).href}`,
      MODULE_LOG: moduleLog,
    });
    url = String((await gateway.waitForLog('listening')).url);
  });
  afterAll(async () => {
    gateway.kill();
    await rm(dataDir, { recursive: true, force: true });
    await rm(join(moduleLog, '..'), { recursive: true, force: true });
  });

  it('answers /health as soon as it listens, before the database is ready', async () => {
    const response = await fetch(`${url}/health`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'ok' });
  });

  it('becomes ready on PGlite and the memory store', async () => {
    const ready = await gateway.waitForLog('spicegate ready');
    expect(ready).toMatchObject({ database: 'pglite', store: 'memory' });
    const response = await fetch(`${url}/ready`);
    expect(response.status).toBe(200);
  });

  it('loads no Redis, Upstash or tRPC client on its way to ready (serve on embedded defaults needs none)', async () => {
    await gateway.waitForLog('spicegate ready');
    const packages = new Set(
      (await readFile(moduleLog, 'utf8'))
        .split('\n')
        .map((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1])
        .filter((name) => name !== undefined),
    );
    // The record is of this start: the embedded database's driver is in it.
    expect(packages).toContain('@electric-sql/pglite');
    const clients = [...packages].filter(
      (name) => name === 'ioredis' || name.startsWith('@upstash/') || name === '@trpc/client',
    );
    expect(clients).toEqual([]);
  });

  it('answers an unknown route with 404 in the error shape', async () => {
    const response = await fetch(`${url}/nope`);
    expect(response.status).toBe(404);
    const body = (await response.json()) as { error: Record<string, unknown> };
    expect(body.error).toEqual({
      code: 'not_found',
      message: 'No route for GET /nope',
      requestId: response.headers.get('x-request-id'),
    });
  });

  it("answers a URL over Node's header limit with 431 in the error shape, not a bare status line", async () => {
    const response = await fetch(`${url}/health?pad=${'x'.repeat(20 * 1024)}`);
    expect(response.status).toBe(431);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    const body = (await response.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({
      code: 'headers_too_large',
      requestId: response.headers.get('x-request-id'),
    });
  });

  it('refuses a 2 MB body with 413', async () => {
    const response = await fetch(`${url}/api/v1/inference`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: 'x'.repeat(2 * 1024 * 1024),
    });
    expect(response.status).toBe(413);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
  });

  it('keeps generated secrets in DATA_DIR, readable by the owner only', async () => {
    const token = await stat(join(dataDir, 'admin.token'));
    expect(token.mode & 0o777).toBe(0o600);
    expect((await stat(dataDir)).mode & 0o077).toBe(0);
    const logged = gateway.lines.find((line) => line.msg === 'bootstrap admin token file');
    expect(logged).toMatchObject({ path: join(dataDir, 'admin.token'), generated: true });
  });

  it('lets the CLI create a tenant through the running server with the generated token', async () => {
    const { stdout } = await run(
      process.execPath,
      ['bin/spicegate.js', 'tenant', 'create', '--url', url, '--name', 'CLI Tenant', '--tier', '5'],
      { env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: '', REDIS_URL: '', ADMIN_TOKEN: '' } },
    );
    const tenant = JSON.parse(stdout) as { id: string; name: string; tier: number };
    expect(tenant).toMatchObject({ name: 'CLI Tenant', tier: 5 });
    const listed = await run(process.execPath, ['bin/spicegate.js', 'tenant', 'list', '--url', url], {
      env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: '', REDIS_URL: '', ADMIN_TOKEN: '' },
    });
    expect(listed.stdout).toContain(tenant.id);
  });

  it('issues a caller token and starts a key rotation through the CLI', async () => {
    const env = { ...process.env, DATA_DIR: dataDir, DATABASE_URL: '', REDIS_URL: '', ADMIN_TOKEN: '' };
    const { stdout: token } = await run(
      process.execPath,
      ['bin/spicegate.js', 'token', '--role', 'operator', '--url', url, '--ttl', '600'],
      { env },
    );
    const info = await fetch(`${url}/trpc/admin.system.info`, {
      headers: { authorization: `Bearer ${token.trim()}` },
    });
    expect(info.status).toBe(200);
    const { stdout } = await run(
      process.execPath,
      ['bin/spicegate.js', 'signing-key', 'rotate', '--url', url],
      { env },
    );
    expect(JSON.parse(stdout)).toMatchObject({ state: 'pending', alg: 'ES256' });
    const jwks = (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: unknown[] };
    expect(jwks.keys).toHaveLength(2);
    // The private keys and the API key pepper stay in DATA_DIR, readable by the owner only.
    const keyFiles = await readdir(join(dataDir, 'signing-keys'));
    expect(keyFiles).toHaveLength(2);
    for (const name of keyFiles)
      expect((await stat(join(dataDir, 'signing-keys', name))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dataDir, 'signing-keys'))).mode & 0o077).toBe(0);
    expect((await stat(join(dataDir, 'api-key-pepper'))).mode & 0o777).toBe(0o600);
  });

  it('never writes the admin token to its log', async () => {
    const { readFile } = await import('node:fs/promises');
    const token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
    expect(JSON.stringify(gateway.lines)).not.toContain(token);
  });

  it('exits 0 on SIGTERM', async () => {
    gateway.child.kill('SIGTERM');
    const { code } = await gateway.exited;
    expect(code).toBe(0);
    expect(gateway.lines.some((line) => line.msg === 'shutdown complete')).toBe(true);
  });
});
