/**
 * npm run bench:gateway — what the gateway costs on top of its upstream, in one run, on loopback.
 * Four targets answer the same OpenAI-compatible requests from the same mock upstream
 * (tests/bench/gateway/mock-upstream.ts), each in its own process:
 *   A   the mock upstream itself
 *   B   a bare node:http keep-alive pass-through proxy (the floor for any Node proxy)
 *   B2  Hono + @hono/node-server + global `fetch` pass-through (a naive Hono gateway)
 *   G   `spicegate serve` with full enforcement: key verification, admit, upstream, finalize,
 *       spend row — on a Redis this bench starts (so INFO/MONITOR count only G's commands)
 * Per target: requests/s at saturation (50 connections, closed loop), p50/p99 at a fixed 500 req/s
 * (open loop, evenly paced, latency from the scheduled send time), streaming requests/s with 20
 * chunks, CPU ms per request and RSS of the target's process (/proc), and for G the Redis round
 * trips per request, the streaming overhead per token and 1,000 concurrent slow streams.
 * Prints one table, the ratios and the goals of issue 6; asserts nothing.
 *
 * BENCH_SECONDS (5): each saturation window, after 1 s of warm-up.
 * BENCH_LATENCY_SECONDS (10): the paced window (5,000 samples at 500 req/s: p99 is the 50th worst).
 * BENCH_TENANTS (200): enterprise tenants G's load is spread over (see TENANT_LIMITS_NOTE).
 * BENCH_SLOW_STREAMS (1000): concurrent slow streams against G.
 * DATABASE_URL: when set, G gets a fresh database on that server (created and dropped by the
 *   bench); else PGlite in a temp DATA_DIR, inside G's process (its RSS included).
 * BENCH_PROFILE=1: run G under `node --cpu-prof` and print its top self time during the
 *   non-streaming saturation window (G's figures then include the profiler's overhead).
 */
import { availableParallelism, loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startRedisServer } from '../support/redis-server.js';
import { killAll, startHelper } from './gateway/children.js';
import {
  createTenants,
  type Gateway,
  startGateway,
  type Tenant,
  type UpstreamMode,
} from './gateway/gateway.js';
import {
  keepAliveAgent,
  type Paced,
  paced,
  type Saturation,
  type Shot,
  saturate,
  send,
  sendForText,
  sequential,
  shot,
  Tally,
  type Target,
} from './gateway/load.js';
import { cpuMs, cpuMsByName, machineBusyMs, ownCpuMs, rssMiB } from './gateway/proc.js';
import { monotonicUs, type ProfileSummary, summarizeProfile } from './gateway/profile.js';
import { commandCalls, difference, type Monitored, monitorCommands } from './gateway/redis-stats.js';

// The one switch for G's upstream: 'openai' puts G in front of the same mock as A, B and B2 (the
// fair comparison); 'local' uses the built-in model with no delay, for a tree without the
// OpenAI-compatible adapter (src/upstream/openai.ts landed in 098e856).
const G_UPSTREAM: UpstreamMode['kind'] = 'openai';

const SECONDS = positive('BENCH_SECONDS', 5);
const LATENCY_SECONDS = positive('BENCH_LATENCY_SECONDS', 10);
const TENANTS = Math.round(positive('BENCH_TENANTS', 200));
const SLOW_STREAMS = Math.round(positive('BENCH_SLOW_STREAMS', 1000));
const PROFILE = process.env.BENCH_PROFILE === '1';
const WARMUP_MS = 1_000;
const CONNECTIONS = 50;
const RATE_PER_SECOND = 500;
const MAX_TOKENS = 16;
const STREAM_CHUNKS = 20;
// 50 chunks 200 ms apart: a 10 s stream, so all of them are open at once for several seconds.
const SLOW_CHUNKS = 50;
const SLOW_DELAY_MS = 200;
const SEQUENTIAL_MS = 2_000;
// Requests watched under MONITOR (sequential): enough to average out background jobs' commands.
const MONITORED_REQUESTS = 200;
// 10^15 µ ($1B): the largest amount below 2^53 in the engine's units with plenty of room; each
// request reserves a few µ.
const CREDIT_MICRO = 10n ** 15n;
const POOL = 'cheap';
const CHAT = '/v1/chat/completions';

// Goals of issue 6 for G with full enforcement.
const GOAL_RPS_SHARE_OF_B = 0.5;
const GOAL_ADDED_P99_MS = 3;
const GOAL_ROUND_TRIPS = 2;
const GOAL_SLOW_STREAMS = 1_000;
const GOAL_SLOW_RSS_MIB = 200;

const TENANT_LIMITS_NOTE =
  'G runs on the default tier table (an enterprise tenant admits 1,000 req/min; a request without ' +
  '`user` takes the per-tenant burst bucket of 10). Rather than raise them with TIERS, the load is ' +
  'spread over BENCH_TENANTS tenants (one key each, rpmLimit 10^9) and every request names a fresh ' +
  '`user`: every limit is evaluated in admit, as in production; none ever denies.';

function positive(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!(value > 0)) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

interface Subject {
  name: string;
  pid: number;
  /** A fresh request per call; `stream` picks the streaming shape with `tokens` chunks. */
  request(shape: { stream: boolean; tokens: number; content?: string }): Target;
}

function body(shape: { stream: boolean; tokens: number; content?: string }, user?: string) {
  return {
    model: POOL,
    messages: [{ role: 'user', content: shape.content ?? 'hi' }],
    max_tokens: shape.tokens,
    ...(shape.stream ? { stream: true, stream_options: { include_usage: true } } : {}),
    ...(user === undefined ? {} : { user }),
  };
}

/** A, B and B2: the same request every time. */
function plainSubject(name: string, pid: number, url: string): Subject {
  return { name, pid, request: (shape) => shot(url, CHAT, body(shape), {}) };
}

/** G: keys taken round-robin over the tenants, and a user id never used before on each request. */
function gatewaySubject(gateway: Gateway, tenants: Tenant[]): Subject {
  let counter = 0;
  const runId = Date.now().toString(36);
  const auth = tenants.map((tenant) => ({ authorization: `Bearer ${tenant.key}` }));
  return {
    name: 'G',
    pid: gateway.pid,
    request: (shape) => () => {
      counter += 1;
      return shot(
        gateway.url,
        CHAT,
        body(shape, `u${runId}${counter.toString(36)}`),
        auth[counter % auth.length] as Record<string, string>,
      );
    },
  };
}

const one = (target: Target): Shot => (typeof target === 'function' ? target() : target);

/** Each target must really answer: JSON with usage; a stream of `tokens` content chunks, usage and [DONE]. */
async function probe(subject: Subject): Promise<void> {
  const agent = keepAliveAgent(1);
  try {
    const plain = await sendForText(agent, one(subject.request({ stream: false, tokens: MAX_TOKENS })));
    const parsed = JSON.parse(plain.text) as { usage?: { completion_tokens?: number } };
    if (plain.status !== 200 || parsed.usage?.completion_tokens !== MAX_TOKENS) {
      throw new Error(`${subject.name}: unexpected answer ${plain.status} ${plain.text.slice(0, 300)}`);
    }
    const streamed = await sendForText(agent, one(subject.request({ stream: true, tokens: STREAM_CHUNKS })));
    const contents = streamed.text.match(/"content":"tok\d+ ?"/g)?.length ?? 0;
    if (
      streamed.status !== 200 ||
      contents !== STREAM_CHUNKS ||
      !streamed.text.includes('"usage"') ||
      !streamed.text.trimEnd().endsWith('data: [DONE]')
    ) {
      throw new Error(
        `${subject.name}: unexpected stream (${streamed.status}, ${contents} chunks) ${streamed.text.slice(-300)}`,
      );
    }
  } finally {
    agent.destroy();
  }
}

interface Measured {
  name: string;
  saturation: Saturation;
  cpuMsPerRequest: number;
  latency: Paced;
  streaming: Saturation;
  cpuMsPerStream: number;
  stream20Ms: number;
  stream1Ms: number;
  rss: { now: number; peak: number };
  /** Connections the mock accepted per chat request it served, over the saturation window. */
  upstreamConnectionsPerRequest: number;
  /**
   * CPU ms per request over the saturation window, by process: the target, the mock upstream, this
   * process (the load generator), Redis and PostgreSQL (G only), and the whole machine.
   */
  cpuBreakdown: CpuSplit;
  /** G only: INFO commandstats over the saturation window. */
  redis?: { scriptCalls: number; allCommands: number };
  profileWindowUs?: [number, number];
}

interface CpuSplit {
  target: number;
  mock: number;
  loadGenerator: number;
  redis: number;
  postgres: number;
  machine: number;
}

/** What every process involved has used so far (ms); `redisPid` only when the target uses it. */
function cpuSnapshot(targetPid: number, mockPid: number, redisPid: number | undefined): CpuSplit {
  return {
    target: cpuMs(targetPid),
    mock: cpuMs(mockPid),
    loadGenerator: ownCpuMs(),
    redis: redisPid === undefined ? 0 : cpuMs(redisPid),
    postgres: redisPid === undefined ? 0 : cpuMsByName('postgres'),
    machine: machineBusyMs(),
  };
}

const perRequest = (after: CpuSplit, before: CpuSplit, requests: number): CpuSplit => {
  const n = Math.max(1, requests);
  return {
    target: (after.target - before.target) / n,
    mock: (after.mock - before.mock) / n,
    loadGenerator: (after.loadGenerator - before.loadGenerator) / n,
    redis: (after.redis - before.redis) / n,
    postgres: (after.postgres - before.postgres) / n,
    machine: (after.machine - before.machine) / n,
  };
};

interface MockCounts {
  connections: number;
  requests: number;
}

const mockCounts = async (mockUrl: string) => (await (await fetch(`${mockUrl}/stats`)).json()) as MockCounts;

async function measure(
  subject: Subject,
  mock: { url: string; pid: number },
  stats: { client: Redis; pid: number } | null,
): Promise<Measured> {
  const mockUrl = mock.url;
  let splitBefore = cpuSnapshot(subject.pid, mock.pid, stats?.pid);
  let splitAfter = splitBefore;
  let upstreamBefore: MockCounts = { connections: 0, requests: 0 };
  let upstreamAfter: MockCounts = { connections: 0, requests: 0 };
  let cpuBefore = 0;
  let cpuAfter = 0;
  let redisBefore = new Map<string, number>();
  let redisAfter = new Map<string, number>();
  const window: [number, number] = [0, 0];
  const saturation = await saturate({
    target: subject.request({ stream: false, tokens: MAX_TOKENS }),
    connections: CONNECTIONS,
    warmupMs: WARMUP_MS,
    durationMs: SECONDS * 1000,
    onMeasureStart: async () => {
      if (stats) redisBefore = await commandCalls(stats.client);
      upstreamBefore = await mockCounts(mockUrl);
      cpuBefore = cpuMs(subject.pid);
      splitBefore = cpuSnapshot(subject.pid, mock.pid, stats?.pid);
      window[0] = monotonicUs();
    },
    onMeasureEnd: async () => {
      window[1] = monotonicUs();
      cpuAfter = cpuMs(subject.pid);
      splitAfter = cpuSnapshot(subject.pid, mock.pid, stats?.pid);
      upstreamAfter = await mockCounts(mockUrl);
      if (stats) redisAfter = await commandCalls(stats.client);
    },
  });
  const latency = await paced({
    target: subject.request({ stream: false, tokens: MAX_TOKENS }),
    ratePerSecond: RATE_PER_SECOND,
    warmupMs: WARMUP_MS,
    durationMs: LATENCY_SECONDS * 1000,
    maxSockets: CONNECTIONS,
  });
  let streamCpuBefore = 0;
  let streamCpuAfter = 0;
  const streaming = await saturate({
    target: subject.request({ stream: true, tokens: STREAM_CHUNKS }),
    connections: CONNECTIONS,
    warmupMs: WARMUP_MS,
    durationMs: SECONDS * 1000,
    onMeasureStart: () => {
      streamCpuBefore = cpuMs(subject.pid);
    },
    onMeasureEnd: () => {
      streamCpuAfter = cpuMs(subject.pid);
    },
  });
  const stream20 = await sequential({
    target: subject.request({ stream: true, tokens: STREAM_CHUNKS }),
    warmupMs: 300,
    durationMs: SEQUENTIAL_MS,
  });
  const stream1 = await sequential({
    target: subject.request({ stream: true, tokens: 1 }),
    warmupMs: 300,
    durationMs: SEQUENTIAL_MS,
  });
  const measured: Measured = {
    name: subject.name,
    saturation,
    cpuMsPerRequest: (cpuAfter - cpuBefore) / Math.max(1, saturation.requests),
    cpuBreakdown: perRequest(splitAfter, splitBefore, saturation.requests),
    // Minus the /stats call itself (one connection of its own, as fetch does not reuse ours).
    upstreamConnectionsPerRequest:
      (upstreamAfter.connections - upstreamBefore.connections - 1) /
      Math.max(1, upstreamAfter.requests - upstreamBefore.requests),
    latency,
    streaming,
    cpuMsPerStream: (streamCpuAfter - streamCpuBefore) / Math.max(1, streaming.requests),
    stream20Ms: stream20.p50Ms,
    stream1Ms: stream1.p50Ms,
    rss: rssMiB(subject.pid),
    profileWindowUs: window,
  };
  if (stats) {
    const delta = difference(redisAfter, redisBefore);
    // The closing INFO is not counted yet when it answers; the opening one is.
    delta.set('info', (delta.get('info') ?? 1) - 1);
    const ok = Math.max(1, saturation.requests - saturation.tally.failed);
    measured.redis = {
      scriptCalls: ((delta.get('evalsha') ?? 0) + (delta.get('eval') ?? 0)) / ok,
      allCommands: [...delta.values()].reduce((sum, count) => sum + count, 0) / ok,
    };
  }
  return measured;
}

interface SlowStreams {
  ok: number;
  tally: Tally;
  wallMs: number;
  rssBaselineMiB: number;
  rssPeakMiB: number;
}

/** SLOW_STREAMS streams opened at once against G, each 50 chunks 200 ms apart; G's RSS sampled. */
async function slowStreams(subject: Subject): Promise<SlowStreams> {
  const agent = keepAliveAgent(SLOW_STREAMS * 2);
  const tally = new Tally();
  const rssBaselineMiB = rssMiB(subject.pid).now;
  let rssPeakMiB = rssBaselineMiB;
  const sampler = setInterval(() => {
    rssPeakMiB = Math.max(rssPeakMiB, rssMiB(subject.pid).now);
  }, 100);
  const make = subject.request({ stream: true, tokens: SLOW_CHUNKS, content: `slow ${SLOW_DELAY_MS}` });
  const startedAt = performance.now();
  try {
    const results = await Promise.all(Array.from({ length: SLOW_STREAMS }, () => send(agent, one(make))));
    for (const result of results) tally.add(result);
  } finally {
    clearInterval(sampler);
    agent.destroy();
  }
  rssPeakMiB = Math.max(rssPeakMiB, rssMiB(subject.pid).now);
  return {
    ok: SLOW_STREAMS - tally.failed,
    tally,
    wallMs: performance.now() - startedAt,
    rssBaselineMiB,
    rssPeakMiB,
  };
}

/** The literal shape of the issue on one tenant (no `user`): what the tier limits let through. */
async function oneTenantProbe(gateway: Gateway, tenant: Tenant): Promise<string> {
  const agent = keepAliveAgent(1);
  const tally = new Tally();
  const dimensions = new Map<string, number>();
  for (let i = 0; i < 30; i += 1) {
    const answer = await sendForText(
      agent,
      shot(gateway.url, CHAT, body({ stream: false, tokens: MAX_TOKENS }), {
        authorization: `Bearer ${tenant.key}`,
      }),
    );
    tally.add({ status: answer.status, ok: answer.status === 200 });
    const message = /Rate limit reached on (\w+)/.exec(answer.text)?.[1];
    if (message) dimensions.set(message, (dimensions.get(message) ?? 0) + 1);
  }
  agent.destroy();
  const denied = [...dimensions].map(([name, count]) => `${name}×${count}`).join(' ');
  return `one tenant, one key, no \`user\`, 30 sequential requests: ${tally.describe()}${denied ? ` (429 on ${denied})` : ''}`;
}

async function roundTrips(
  gateway: Gateway,
  subject: Subject,
  redisUrl: string,
): Promise<Monitored & { requests: number }> {
  const health = (await (await fetch(`${gateway.url}/health`)).json()) as {
    scripts: { name: string; version: number; sha1: string }[];
  };
  const shaNames = new Map(
    health.scripts.map((script) => [script.sha1, `${script.name}.v${script.version}`]),
  );
  const client = new Redis(redisUrl, { lazyConnect: true });
  client.on('error', () => {});
  await client.connect();
  const agent = keepAliveAgent(1);
  const make = subject.request({ stream: false, tokens: MAX_TOKENS });
  let ok = 0;
  try {
    const seen = await monitorCommands(client, shaNames, [], async () => {
      for (let i = 0; i < MONITORED_REQUESTS; i += 1) if ((await send(agent, one(make))).ok) ok += 1;
    });
    return { ...seen, requests: ok };
  } finally {
    agent.destroy();
    client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------

const fixed = (value: number | undefined, digits: number) =>
  value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits);
const table = (header: string[], rows: string[][]) => {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((width, i) => (i === 0 ? `${'-'.repeat(width + 1)}-` : `${'-'.repeat(width + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
};
const mark = (pass: boolean) => (pass ? '✓' : '✗');

async function main(): Promise<void> {
  const notes: string[] = [];
  const redis = await startRedisServer();
  const stats = new Redis(redis.url);
  stats.on('error', () => {});
  let gateway: Gateway | undefined;
  let profile: ProfileSummary | undefined;
  let database: TestDatabase | undefined;
  const load = () =>
    loadavg()
      .map((value) => value.toFixed(2))
      .join(' ');
  notes.push(`machine load average (1/5/15 min) at start: ${load()}`);
  try {
    if (process.env.DATABASE_URL) {
      database = await createTestDatabase(process.env.DATABASE_URL, { migrate: false });
    }
    const mock = await startHelper('./mock-upstream.ts', {});
    const proxyB = await startHelper('./proxy-node.ts', { UPSTREAM_URL: mock.url });
    const proxyB2 = await startHelper('./proxy-hono-fetch.ts', { UPSTREAM_URL: mock.url });
    const upstream: UpstreamMode =
      G_UPSTREAM === 'openai' ? { kind: 'openai', mockUrl: mock.url } : { kind: 'local', tokens: 4_096 };
    const setupStartedAt = performance.now();
    gateway = await startGateway({
      redisUrl: redis.url,
      databaseUrl: database?.url,
      upstream,
      profile: PROFILE,
    });
    const bootMs = performance.now() - setupStartedAt;
    const readyRss = rssMiB(gateway.pid).now;
    const [probeTenant, ...tenants] = await createTenants(gateway, {
      count: TENANTS + 1,
      creditMicro: CREDIT_MICRO,
      concurrency: 4,
    });
    notes.push(
      `G: spicegate serve, UPSTREAM=${upstream.kind}${upstream.kind === 'openai' ? ' (the same mock as A)' : ' (built-in model, LOCAL_MODEL_DELAY_MS=0: NOT the same upstream as A/B/B2)'}, ` +
        `Redis ${redis.url} (started by the bench), database ${database ? 'a fresh one on DATABASE_URL' : "PGlite in a temp DATA_DIR (in G's process)"}; ` +
        `ready in ${(bootMs / 1000).toFixed(1)} s with RSS ${readyRss.toFixed(0)} MiB; ${TENANTS} tenants set up in ${((performance.now() - setupStartedAt - bootMs) / 1000).toFixed(1)} s`,
    );
    notes.push(await oneTenantProbe(gateway, probeTenant as Tenant));

    const subjects: Subject[] = [
      plainSubject('A  upstream (mock) directly', mock.pid, mock.url),
      plainSubject('B  node:http proxy', proxyB.pid, proxyB.url),
      plainSubject('B2 Hono + fetch proxy', proxyB2.pid, proxyB2.url),
      { ...gatewaySubject(gateway, tenants), name: 'G  spicegate, full enforcement' },
    ];
    for (const subject of subjects) await probe(subject);

    const results: Measured[] = [];
    for (const subject of subjects) {
      process.stderr.write(`measuring ${subject.name} …\n`);
      results.push(
        await measure(
          subject,
          mock,
          subject === subjects[3] ? { client: stats, pid: redis.process.pid as number } : null,
        ),
      );
    }
    const g = subjects[3] as Subject;
    process.stderr.write('round trips under MONITOR …\n');
    const trips = await roundTrips(gateway, g, redis.url);
    process.stderr.write(`${SLOW_STREAMS} slow streams …\n`);
    const slow = await slowStreams(g);

    await gateway.stop();
    const measuredG = results[3] as Measured;
    if (PROFILE && gateway.profileDir && measuredG.profileWindowUs) {
      profile = await summarizeProfile(gateway.profileDir, measuredG.profileWindowUs, 20);
    }
    const logged = [...gateway.logCounts].sort((x, y) => y[1] - x[1]);
    notes.push(
      `G logged ${logged.reduce((sum, [, n]) => sum + n, 0)} lines at warn or above${
        logged.length === 0
          ? ''
          : `: ${logged
              .slice(0, 5)
              .map(([msg, n]) => `"${msg}" ×${n}`)
              .join(', ')}`
      }`,
    );
    gateway = undefined;
    notes.push(`machine load average at the end: ${load()} (other work on this machine skews every row)`);
    print({ results, trips, slow, notes, profile });
  } finally {
    await gateway?.stop().catch(() => {});
    await database?.drop().catch(() => {});
    stats.disconnect();
    await redis.stop();
    killAll();
  }
}

function print(run: {
  results: Measured[];
  trips: Monitored & { requests: number };
  slow: SlowStreams;
  notes: string[];
  profile: ProfileSummary | undefined;
}): void {
  const [a, b, b2, g] = run.results as [Measured, Measured, Measured, Measured];
  const tripsPerRequest =
    [...run.trips.fromClients.values()].reduce((sum, n) => sum + n, 0) / Math.max(1, run.trips.requests);
  const tokenOverheadMs = (g.stream20Ms - a.stream20Ms) / STREAM_CHUNKS;
  // Every core's CPU time per second, shared by every process of the run.
  const budgetMs = (availableParallelism() * 1000) / (GOAL_RPS_SHARE_OF_B * b.saturation.perSecond);
  const split = g.cpuBreakdown;
  const othersMs = split.redis + split.postgres + split.mock + split.loadGenerator;
  const marginalMs = (g.stream20Ms - g.stream1Ms - (a.stream20Ms - a.stream1Ms)) / (STREAM_CHUNKS - 1);
  const rows = run.results.map((r) => [
    r.name,
    fixed(r.saturation.perSecond, 0),
    fixed(r.cpuMsPerRequest, 3),
    fixed(r.latency.p50Ms, 2),
    fixed(r.latency.p99Ms, 2),
    r === a ? '-' : fixed(r.latency.p99Ms - a.latency.p99Ms, 2),
    fixed(r.streaming.perSecond, 0),
    fixed(r.cpuMsPerStream, 3),
    fixed(r.stream20Ms, 2),
    fixed(r.rss.now, 0),
    r.redis ? `${fixed(tripsPerRequest, 2)} (${fixed(r.redis.scriptCalls, 2)})` : '-',
    String(r.saturation.tally.failed + r.latency.tally.failed + r.streaming.tally.failed),
  ]);
  const out: string[] = [
    `bench:gateway — loopback, ${CONNECTIONS} connections closed-loop for ${SECONDS} s (after ${WARMUP_MS / 1000} s warm-up); ` +
      `latency open-loop at ${RATE_PER_SECOND} req/s evenly paced for ${LATENCY_SECONDS} s, from the scheduled send time;`,
    `requests: POST ${CHAT} {model:'${POOL}', messages:[{role:'user',content:'hi'}], max_tokens:${MAX_TOKENS}}; streams: stream:true, ${STREAM_CHUNKS} chunks + usage + [DONE]`,
    ...run.notes,
    `note: ${TENANT_LIMITS_NOTE}`,
    '',
    table(
      [
        'target',
        'req/s',
        'CPU ms/req',
        'p50 ms',
        'p99 ms',
        'added p99',
        'stream req/s',
        'CPU ms/stream',
        'stream ms',
        'RSS MiB',
        'Redis RT/req',
        'failed',
      ],
      rows,
    ),
    '',
    'req/s, CPU ms/req: non-streaming saturation; CPU of the target process only (Δ utime+stime in /proc ÷ requests).',
    'p50/p99 @ 500 req/s; added p99 = target p99 − A p99. stream req/s, CPU ms/stream: streaming saturation.',
    `stream ms: median time of one ${STREAM_CHUNKS}-chunk stream, one at a time. RSS: VmRSS after its runs.`,
    'Redis RT/req (G): commands G sent per request under MONITOR (sequential), and in brackets EVALSHA+EVAL',
    '  per request from INFO commandstats over the saturation window.',
    `failed: answers not 200 (or streams without [DONE]); statuses: ${run.results
      .map(
        (r) => `${r.name.split(' ')[0]} ${r.saturation.tally.describe()} / ${r.streaming.tally.describe()}`,
      )
      .join('; ')}`,
    `new upstream connections per upstream request (saturation): ${run.results.map((r) => `${r.name.split(' ')[0]} ${fixed(r.upstreamConnectionsPerRequest, 3)}`).join(', ')} (keep-alive: ≈ 0)`,
    `load generator timer slack (send − schedule) p99: ${run.results.map((r) => `${r.name.split(' ')[0]} ${fixed(r.latency.sendLagP99Ms, 2)} ms`).join(', ')}`,
    '',
    'G details',
    `- Redis, MONITOR over ${run.trips.requests} sequential requests: ${[...run.trips.fromClients]
      .sort((x, y) => y[1] - x[1])
      .map(([label, count]) => `${label} ${fixed(count / Math.max(1, run.trips.requests), 2)}`)
      .join(
        ', ',
      )} per request; commands run inside Lua ${fixed(run.trips.insideLua / Math.max(1, run.trips.requests), 1)} per request`,
    `- Redis, INFO commandstats over the saturation window: EVALSHA+EVAL ${fixed(g.redis?.scriptCalls, 2)} per request, all commands (Lua's own included) ${fixed(g.redis?.allCommands, 1)}`,
    `- streaming overhead per token: (G − A) ${STREAM_CHUNKS}-chunk stream time ÷ ${STREAM_CHUNKS} = ${fixed(tokenOverheadMs, 3)} ms ` +
      `(includes the per-request overhead); marginal, ((G20 − G1) − (A20 − A1)) ÷ ${STREAM_CHUNKS - 1} = ${fixed(marginalMs, 3)} ms per extra token`,
    `- ${SLOW_STREAMS} concurrent slow streams (${SLOW_CHUNKS} chunks × ${SLOW_DELAY_MS} ms): ${run.slow.ok} complete (${run.slow.tally.describe()}) in ${fixed(run.slow.wallMs / 1000, 1)} s; ` +
      `G RSS ${fixed(run.slow.rssBaselineMiB, 0)} MiB before, ${fixed(run.slow.rssPeakMiB, 0)} MiB peak (sampled every 100 ms)`,
    `- RSS peak over the whole run (VmHWM before the slow streams): ${fixed(g.rss.peak, 0)} MiB`,
    '',
    `machine CPU per request over the non-streaming saturation window (ms; ${availableParallelism()} cores, which every process shares)`,
    table(
      ['target', 'target', 'mock upstream', 'load generator', 'Redis', 'PostgreSQL', 'whole machine'],
      run.results.map((r) => [
        r.name,
        fixed(r.cpuBreakdown.target, 3),
        fixed(r.cpuBreakdown.mock, 3),
        fixed(r.cpuBreakdown.loadGenerator, 3),
        r === g ? fixed(r.cpuBreakdown.redis, 3) : '-',
        r === g ? fixed(r.cpuBreakdown.postgres, 3) : '-',
        fixed(r.cpuBreakdown.machine, 3),
      ]),
    ),
    `- budget: at ${GOAL_RPS_SHARE_OF_B} × B's rate (${fixed(GOAL_RPS_SHARE_OF_B * b.saturation.perSecond, 0)} req/s) the machine has ${fixed(budgetMs, 3)} ms of CPU per request; ` +
      `at G's rate Redis + PostgreSQL + mock + load generator already took ${fixed(othersMs, 3)} ms, leaving G ${fixed(budgetMs - othersMs, 3)} ms (G used ${fixed(g.cpuBreakdown.target, 3)}; B uses ${fixed(b.cpuBreakdown.target, 3)} without enforcement)`,
    '',
    'ratios',
    `- req/s: G/B ${fixed(g.saturation.perSecond / b.saturation.perSecond, 2)}, G/B2 ${fixed(g.saturation.perSecond / b2.saturation.perSecond, 2)}, B/A ${fixed(b.saturation.perSecond / a.saturation.perSecond, 2)}`,
    `- stream req/s: G/B ${fixed(g.streaming.perSecond / b.streaming.perSecond, 2)}, G/B2 ${fixed(g.streaming.perSecond / b2.streaming.perSecond, 2)}`,
    `- CPU ms/req: G/B ${fixed(g.cpuMsPerRequest / b.cpuMsPerRequest, 2)}, G/B2 ${fixed(g.cpuMsPerRequest / b2.cpuMsPerRequest, 2)}`,
    `- added p99: G ${fixed(g.latency.p99Ms - a.latency.p99Ms, 2)} ms, B ${fixed(b.latency.p99Ms - a.latency.p99Ms, 2)} ms, B2 ${fixed(b2.latency.p99Ms - a.latency.p99Ms, 2)} ms`,
    '',
    'goals (issue 6; reference on this machine: B ≈ 11–12k req/s, B2 ≈ 2k req/s, a popular Hono-based AI gateway ≈ 1.1k req/s, p99 +31–35 ms)',
    `${mark(g.saturation.perSecond >= GOAL_RPS_SHARE_OF_B * b.saturation.perSecond)} req/s ≥ ${GOAL_RPS_SHARE_OF_B} × B: ${fixed(g.saturation.perSecond, 0)} vs ${fixed(GOAL_RPS_SHARE_OF_B * b.saturation.perSecond, 0)}`,
    `${mark(g.latency.p99Ms - a.latency.p99Ms <= GOAL_ADDED_P99_MS)} added p99 at ${RATE_PER_SECOND} req/s ≤ ${GOAL_ADDED_P99_MS} ms: ${fixed(g.latency.p99Ms - a.latency.p99Ms, 2)} ms`,
    `${mark(tripsPerRequest <= GOAL_ROUND_TRIPS + 0.05)} Redis round trips per request = ${GOAL_ROUND_TRIPS}: ${fixed(tripsPerRequest, 2)}`,
    `${mark(run.slow.ok >= GOAL_SLOW_STREAMS && run.slow.rssPeakMiB <= GOAL_SLOW_RSS_MIB)} ≥ ${GOAL_SLOW_STREAMS} concurrent slow streams with RSS ≤ ${GOAL_SLOW_RSS_MIB} MB: ${run.slow.ok} complete, peak ${fixed(run.slow.rssPeakMiB, 0)} MiB`,
  ];
  if (run.profile) {
    out.push(
      '',
      `G CPU profile (--cpu-prof), non-streaming saturation window only: ${run.profile.samples} samples over ${fixed(run.profile.windowMs / 1000, 1)} s; self time`,
      'by module:',
      ...run.profile.modules.map((m) => `  ${fixed(m.share * 100, 1).padStart(5)} %  ${m.name}`),
      'by function:',
      ...run.profile.functions.map((f) => `  ${fixed(f.share * 100, 1).padStart(5)} %  ${f.name}`),
    );
  }
  console.log(out.join('\n'));
}

// Explicit exits: a stray keep-alive socket must not keep the bench alive; 'exit' kills the children.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
