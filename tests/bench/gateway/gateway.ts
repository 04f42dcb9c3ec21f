import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../support/redis-server.js';
import { stopChild, track } from './children.js';

/**
 * Target G of bench:gateway: the real `spicegate serve` (bin/spicegate.js, as `npm start` runs it)
 * in its own process, on a Redis the bench started, with the tenants and keys it needs created
 * through the public tRPC API.
 */

export type UpstreamMode = { kind: 'openai'; mockUrl: string } | { kind: 'local'; tokens: number };

export interface Gateway {
  url: string;
  pid: number;
  child: ChildProcess;
  /** The last 8 KiB of its stdout and stderr (pino lines at LOG_LEVEL=warn, crashes). */
  output(): string;
  /** Log lines so far, by `msg` (at LOG_LEVEL=warn: warnings and errors only). */
  logCounts: Map<string, number>;
  adminToken: string;
  /** Its collections, when started with `gcTrace` (from `--trace-gc-nvp`), oldest first. */
  gc: GcEvent[];
  /** Directory of the `--cpu-prof` output when profiling. */
  profileDir: string | undefined;
  /** SIGTERM (the gateway drains and exits; a CPU profile is written), then the temp DATA_DIR goes. */
  stop(): Promise<void>;
}

/** One garbage collection, as `--trace-gc-nvp` reports it. */
export interface GcEvent {
  /** When it ended, on this process's `performance.now()` clock (± the child's start-up, ~50 ms). */
  atMs: number;
  /** `s`: a scavenge (young generation); anything else (`mc`, `ms`…) a full collection. */
  kind: string;
  pauseMs: number;
  /** Bytes moved to the old generation (scavenges). */
  promotedBytes: number;
}

const NVP_LINE = / (\d+) ms: pause=([\d.]+) .*?\bgc=(\w+)\b(?:.*?\bpromoted=(\d+))?/;

export async function startGateway(options: {
  redisUrl: string;
  /** A PostgreSQL database of the bench's own; PGlite in the temp DATA_DIR when undefined. */
  databaseUrl: string | undefined;
  upstream: UpstreamMode;
  profile: boolean;
  /** Extra node flags (e.g. `--trace-gc` while investigating). */
  nodeFlags?: string[];
  /** Extra environment variables of this variant (e.g. a feature switched off to compare). */
  env?: Record<string, string>;
  /** The checkout whose `bin/spicegate.js` runs (another tree, to measure it beside this one). */
  dir?: string;
  /** Every byte of its stdout and stderr is appended here too (e.g. with `--trace-gc`). */
  logFile?: string;
  /** Run it with `--trace-gc-nvp` and collect its collections in `gc`. */
  gcTrace?: boolean;
}): Promise<Gateway> {
  const dataDir = await mkdtemp(join(tmpdir(), 'sg-bench-gateway-'));
  const port = await freePort();
  const adminToken = randomBytes(32).toString('base64url');
  const profileDir = options.profile ? join(dataDir, 'cpu-prof') : undefined;
  const upstreamEnv: Record<string, string> =
    options.upstream.kind === 'openai'
      ? { UPSTREAM: 'openai', UPSTREAM_URL: `${options.upstream.mockUrl}/v1` }
      : {
          UPSTREAM: 'local',
          LOCAL_MODEL_TOKENS: String(options.upstream.tokens),
          LOCAL_MODEL_DELAY_MS: '0',
        };
  const env: Record<string, string> = {
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    ...(options.databaseUrl === undefined ? {} : { DATABASE_URL: options.databaseUrl }),
    REDIS_URL: options.redisUrl,
    LOG_LEVEL: 'warn',
    ADMIN_TOKEN: adminToken,
    SHUTDOWN_TIMEOUT_MS: '5000',
    ...upstreamEnv,
    ...options.env,
  };
  // As tests/support/gateway-process.ts does, minus the variables that would change what runs; our
  // own spawn because --cpu-prof is a node flag that NODE_OPTIONS does not accept.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        !['DATABASE_URL', 'REDIS_URL', 'ADMIN_TOKEN', 'PORT', 'HOST', 'DATA_DIR', 'LOG_LEVEL'].includes(name),
    ),
  );
  const flags = [
    ...(options.gcTrace === true ? ['--trace-gc-nvp'] : []),
    ...(options.nodeFlags ?? []),
    ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]),
  ];
  const gc: GcEvent[] = [];
  // V8 stamps its lines with the time since the isolate started, which is about now.
  const spawnedAt = performance.now();
  const child = track(
    spawn(process.execPath, [...flags, 'bin/spicegate.js', 'serve'], {
      env: { ...inherited, NODE_ENV: 'production', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.dir === undefined ? {} : { cwd: options.dir }),
    }),
  );
  const logFile =
    options.logFile === undefined ? undefined : createWriteStream(options.logFile, { flags: 'a' });
  // Always drained: a full pipe would block the gateway's logger.
  let output = '';
  let partial = '';
  const logCounts = new Map<string, number>();
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8_192);
    logFile?.write(chunk);
  };
  child.stdout?.on('data', (chunk: Buffer) => {
    keep(chunk);
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      // pino's JSON lines only (not `--trace-gc` and other node flags' output).
      if (!line.startsWith('{')) {
        const nvp = NVP_LINE.exec(line);
        if (nvp !== null)
          gc.push({
            atMs: spawnedAt + Number(nvp[1]),
            kind: nvp[3] as string,
            pauseMs: Number(nvp[2]),
            promotedBytes: Number(nvp[4] ?? 0),
          });
        continue;
      }
      const msg = /"msg":"((?:[^"\\]|\\.)*)"/.exec(line)?.[1] ?? line.slice(0, 80);
      logCounts.set(msg, (logCounts.get(msg) ?? 0) + 1);
    }
  });
  child.stderr?.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const deadline = performance.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`spicegate exited: ${output}`);
    const status = await fetch(`${url}/ready`).then(
      (response) => response.status,
      () => 0,
    );
    if (status === 200) break;
    if (performance.now() > deadline) throw new Error(`spicegate never became ready: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    pid: child.pid as number,
    child,
    output: () => output,
    logCounts,
    gc,
    adminToken,
    profileDir,
    stop: async () => {
      await stopChild(child, 'SIGTERM');
      logFile?.end();
      if (profileDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Tenant {
  tenantId: string;
  key: string;
}

// The server's TRPC_MAX_BATCH default: one request carries at most this many calls.
const BATCH = 20;

/**
 * Calls of one procedure as tRPC batches (POST `/trpc/p,p,…?batch=1`, inputs by index), so setting
 * up hundreds of tenants takes a few dozen requests: the gateway holds /trpc to 100 requests a
 * minute per address before authentication, and every call here comes from loopback.
 */
export async function mutateBatch<T>(gateway: Gateway, path: string, inputs: unknown[]): Promise<T[]> {
  if (inputs.length > BATCH) throw new Error(`at most ${BATCH} calls per batch`);
  const response = await fetch(`${gateway.url}/trpc/${inputs.map(() => path).join(',')}?batch=1`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(Object.fromEntries(inputs.map((input, index) => [String(index), input]))),
  });
  const body = (await response.json()) as unknown;
  const items = Array.isArray(body) ? (body as { result?: { data: T } }[]) : [];
  if (items.length !== inputs.length || items.some((item) => item.result === undefined)) {
    throw new Error(`${path} failed (${response.status}): ${JSON.stringify(body).slice(0, 2_000)}`);
  }
  return items.map((item) => (item.result as { data: T }).data);
}

/**
 * `count` enterprise tenants (tier 9), each with a large balance and one live key with the largest
 * rpm limit the API accepts, made in batches of 20; `concurrency` batches in flight at a time.
 */
export async function createTenants(
  gateway: Gateway,
  options: { count: number; creditMicro: bigint; concurrency: number },
): Promise<Tenant[]> {
  const tenants: Tenant[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (next < options.count) {
        const first = next;
        const indices = Array.from({ length: Math.min(BATCH, options.count - first) }, (_, i) => first + i);
        next += indices.length;
        const created = await mutateBatch<{ id: string }>(
          gateway,
          'admin.tenants.create',
          indices.map((index) => ({ name: `bench-${index}`, tier: 9 })),
        );
        await mutateBatch(
          gateway,
          'admin.credits.grant',
          created.map((tenant) => ({
            tenantId: tenant.id,
            amountMicro: options.creditMicro.toString(),
            reason: 'bench:gateway',
          })),
        );
        const keys = await mutateBatch<{ key: string }>(
          gateway,
          'keys.create',
          created.map((tenant) => ({ tenantId: tenant.id, name: 'bench', rpmLimit: 1_000_000_000 })),
        );
        indices.forEach((index, position) => {
          tenants[index] = {
            tenantId: (created[position] as { id: string }).id,
            key: (keys[position] as { key: string }).key,
          };
        });
      }
    }),
  );
  return tenants;
}
