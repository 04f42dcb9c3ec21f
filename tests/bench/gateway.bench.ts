/**
 * npm run bench:gateway — what the gateway costs on top of its upstream, in one run, on loopback.
 * The targets answer the same OpenAI-compatible requests from the same mock upstream
 * (tests/bench/gateway/mock-upstream.ts), each in its own process:
 *   A   the mock upstream itself
 *   B   a bare node:http keep-alive pass-through proxy (the floor for any Node proxy)
 *   B2  Hono + @hono/node-server + global `fetch` pass-through (a naive Hono gateway)
 *   BR  B plus the two store calls of an enforced request (admit, finalize) on a Redis of its own:
 *       the floor of any gateway deciding per request in Redis (tests/bench/gateway/proxy-node-redis.ts)
 *   G   `spicegate serve` with full enforcement: key verification, admit, upstream, settle,
 *       outbox, spend entry — on a Redis and a database of its own (so Redis's CPU and INFO count
 *       only its work); and any variant of G in GATEWAYS (the same gateway with other settings).
 * Per target: CPU ms per request of the target's process (/proc) at saturation (50 connections,
 * closed loop) and at a fixed 500 req/s (open loop, evenly paced), p50/p99 at 500 req/s (from the
 * scheduled send time), CPU ms per 20-chunk stream (streaming saturation), RSS; for G also Redis
 * CPU and commands per inference, Redis round trips (MONITOR), 1,000 concurrent slow streams.
 *
 * Two passes. Pinned (≥ 2 cores, taskset and chrt; tests/bench/gateway/pinning.ts): the target
 * measured alone on one core, everything else on another, Redis and the mock at real-time priority
 * — per-process CPU and latency as if the target had a machine of its own. Unpinned: every process
 * on every core, as the figures before issue 18 were taken. Prints a table per pass, the ratios
 * to B and the goals of issue 18; asserts nothing.
 *
 * BENCH_SECONDS (5): each saturation window, after 1 s of warm-up.
 * BENCH_LATENCY_SECONDS (10): the paced window (5,000 samples at 500 req/s: p99 is the 50th worst).
 * BENCH_TENANTS (200): enterprise tenants G's load is spread over (see TENANT_LIMITS_NOTE).
 * BENCH_SLOW_STREAMS (1000): concurrent slow streams against G.
 * BENCH_PASSES (pinned,unpinned): which passes run, in order.
 * BENCH_ROUNDS (1): each pass measured this many times, the targets in the opposite order every
 *   other round; a table of medians follows (a loaded machine's swings hit single rounds).
 * BENCH_TARGETS: a comma list of the targets to measure besides A and B (e.g. `G,G0`); default all.
 * BENCH_DETAILS=0: skip the gateways' MONITOR round trips and slow streams.
 * BENCH_BASELINE_DIR: another checkout (with node_modules) measured beside this one as G0, so a
 *   change is compared with the code before it in the same run.
 * BENCH_REVERSE=1: the gateways measured in the opposite order. The one measured second pays for
 *   the first's database work still going on (2026-12-02: 1.3–1.4 ms of PostgreSQL CPU per request
 *   against 0.2–0.5), so compare gateways over two runs in opposite orders (docs/performance.md).
 * BENCH_GC=1: every gateway runs with `--trace-gc-nvp`; a table of its collections over the paced
 *   window follows (pauses and bytes promoted to the old generation per 1,000 requests, full GCs).
 * BENCH_G_NODE_FLAGS / BENCH_G_LOG: extra node flags for every G (e.g. `--trace-gc`) and a file
 *   their output is appended to.
 * DATABASE_URL: when set, each G gets a fresh database on that server (created and dropped by the
 *   bench); else PGlite in a temp DATA_DIR, inside G's process (its RSS included).
 * BENCH_PROFILE=1: run the first G under `node --cpu-prof` and print its top self time during the
 *   first pass's non-streaming saturation window (its figures then include the profiler's overhead).
 */
import { availableParallelism, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { type RedisServer, startRedisServer } from '../support/redis-server.js';
import { type Helper, killAll, startHelper, track } from './gateway/children.js';
import {
  createTenants,
  type Gateway,
  type GcEvent,
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
import {
  alive,
  backendPids,
  type Cores,
  pinningCores,
  setAffinity,
  setNice,
  setRealtime,
} from './gateway/pinning.js';
import { cpuMs, machineBusyMs, ownCpuMs, rssMiB } from './gateway/proc.js';
import { monotonicUs, type ProfileSummary, summarizeProfile } from './gateway/profile.js';
import { commandCalls, difference, type Monitored, monitorCommands } from './gateway/redis-stats.js';
import { positive } from './settings.js';

// The one switch for G's upstream: 'openai' puts G in front of the same mock as A, B and B2 (the
// fair comparison); 'local' uses the built-in model with no delay, for a tree without the
// OpenAI-compatible adapter (src/upstream/openai.ts landed in 098e856).
const G_UPSTREAM: UpstreamMode['kind'] = 'openai';

/**
 * The gateways measured: G, and variants of it — each a `spicegate serve` of its own with these
 * extra environment variables (e.g. a feature switched off, to see what it costs), on a Redis and
 * a database of its own, compared with B like G. `dir` runs another checkout's `bin/spicegate.js`.
 */
interface GatewayTarget {
  /** Short name in the tables (G, G0, G-…). */
  name: string;
  /** What it is, in the legend. */
  label: string;
  env: Record<string, string>;
  dir?: string;
  /** Node flags of this target only (after BENCH_G_NODE_FLAGS). */
  nodeFlags?: string[];
}
const BASELINE_DIR = process.env.BENCH_BASELINE_DIR;
const GATEWAY_LIST: GatewayTarget[] = [
  ...(BASELINE_DIR === undefined || BASELINE_DIR === ''
    ? []
    : [
        {
          name: 'G0',
          label: `spicegate from ${BASELINE_DIR} (the code before)`,
          env: {},
          dir: resolve(BASELINE_DIR),
        },
      ]),
  { name: 'G', label: 'spicegate, full enforcement', env: {} },
  // Issue 16: the same build with the row-level-security scopes taking no role (db/scope.ts).
  {
    name: 'G-norls',
    label: 'spicegate, RLS bypassed (SPICEGATE_BENCH_RLS_BYPASS)',
    env: { SPICEGATE_BENCH_RLS_BYPASS: 'true' },
  },
];
const GATEWAYS = process.env.BENCH_REVERSE === '1' ? [...GATEWAY_LIST].reverse() : GATEWAY_LIST;

const SECONDS = positive('BENCH_SECONDS', 5);
const LATENCY_SECONDS = positive('BENCH_LATENCY_SECONDS', 10);
const TENANTS = Math.round(positive('BENCH_TENANTS', 200));
const SLOW_STREAMS = Math.round(positive('BENCH_SLOW_STREAMS', 1000));
const PROFILE = process.env.BENCH_PROFILE === '1';
const TARGETS = process.env.BENCH_TARGETS ? new Set(process.env.BENCH_TARGETS.split(',')) : undefined;
const DETAILS = process.env.BENCH_DETAILS !== '0';
const ROUNDS = Math.round(positive('BENCH_ROUNDS', 1));
const G_NODE_FLAGS = (process.env.BENCH_G_NODE_FLAGS ?? '').split(/\s+/).filter((flag) => flag !== '');
const G_LOG = process.env.BENCH_G_LOG || undefined;
const GC_TRACE = process.env.BENCH_GC === '1';
type PassName = 'pinned' | 'unpinned';
const PASSES = (process.env.BENCH_PASSES ?? 'pinned,unpinned').split(',').map((pass) => {
  if (pass !== 'pinned' && pass !== 'unpinned') throw new Error(`BENCH_PASSES: unknown pass ${pass}`);
  return pass as PassName;
});
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
// Read before pinning narrows this process's own affinity.
const CORES = availableParallelism();

// Goals of issue 18 for G with full enforcement (ratios to B in the pinned pass), and those kept.
const GOAL_CPU_RATIO = 2.5;
const GOAL_STREAM_CPU_RATIO = 3;
const GOAL_ADDED_P99_OVER_B_MS = 3;
const GOAL_ROUND_TRIPS = 2;
const GOAL_SLOW_STREAMS = 1_000;
const GOAL_SLOW_RSS_MIB = 200;
const GOAL_IDLE_RSS_MIB = 100;

const TENANT_LIMITS_NOTE =
  'G runs on the default tier table (an enterprise tenant admits 1,000 req/min; a request without ' +
  '`user` takes the per-tenant burst bucket of 10). Rather than raise them with TIERS, the load is ' +
  'spread over BENCH_TENANTS tenants (one key each, rpmLimit 10^9) and every request names a fresh ' +
  '`user`: every limit is evaluated in admit, as in production; none ever denies.';

interface Subject {
  /** Short name (A, B, B2, G…). */
  name: string;
  label: string;
  pid: number;
  /** A fresh request per call; `stream` picks the streaming shape with `tokens` chunks. */
  request(shape: { stream: boolean; tokens: number; content?: string }): Target;
  /** A gateway's own Redis and database. */
  gateway?: RunningGateway;
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
function plainSubject(name: string, label: string, pid: number, url: string): Subject {
  return { name, label, pid, request: (shape) => shot(url, CHAT, body(shape), {}) };
}

interface RunningGateway {
  target: GatewayTarget;
  gateway: Gateway;
  redis: RedisServer;
  /** A connection for INFO. */
  stats: Redis;
  database: TestDatabase | undefined;
  tenants: Tenant[];
  probeTenant: Tenant;
  bootMs: number;
  /** RSS once ready, before any tenant or request (the idle figure). */
  readyRssMiB: number;
  setupMs: number;
}

/** G: keys taken round-robin over the tenants, and a user id never used before on each request. */
function gatewaySubject(running: RunningGateway): Subject {
  let counter = 0;
  const runId = Date.now().toString(36);
  const auth = running.tenants.map((tenant) => ({ authorization: `Bearer ${tenant.key}` }));
  const { gateway } = running;
  return {
    name: running.target.name,
    label: running.target.label,
    pid: gateway.pid,
    gateway: running,
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

// ---------------------------------------------------------------------------------------------
// Where the processes run.

/** Every process of the run, by role, for placing them. */
interface Processes {
  mock: number;
  /** All targets' pids (A is the mock). */
  targets: number[];
  /** The gateways' Redis servers. */
  redis: number[];
  /** The gateways' databases (their backends are found when placing). */
  databaseUrls: string[];
}

/**
 * Pinned (`cores`): `target` alone on cores.target; the rest — this process (the load generator),
 * the mock, the other targets, Redis, the databases' backends — on cores.others; Redis and the mock
 * at real-time priority, everything else at nice -20 (pinning.ts). Unpinned: everything everywhere
 * at normal priority. Returns the backends.
 */
async function place(
  all: Processes,
  cores: Cores | undefined,
  target: number | undefined,
): Promise<number[]> {
  const backends = (await Promise.all(all.databaseUrls.map(backendPids))).flat();
  const elsewhere = cores === undefined ? undefined : String(cores.others);
  const spread = cores?.all ?? '';
  const others = [process.pid, all.mock, ...all.targets, ...all.redis, ...backends];
  const realtime = [all.mock, ...all.redis];
  if (cores === undefined) {
    for (const pid of others) {
      setAffinity(pid, spread === '' ? `0-${CORES - 1}` : spread);
      setRealtime(pid, false);
      setNice(pid, 0);
    }
    return backends;
  }
  for (const pid of others) {
    setAffinity(pid, pid === target ? String(cores.target) : (elsewhere as string));
    if (realtime.includes(pid)) setRealtime(pid, true);
    else setNice(pid, -20);
  }
  return backends;
}

// ---------------------------------------------------------------------------------------------
// One target, one pass.

interface Measured {
  name: string;
  saturation: Saturation;
  cpuMsPerRequest: number;
  latency: Paced;
  /** The target's CPU over the paced window ÷ the requests in it. */
  cpuMsPerPacedRequest: number;
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
  /** G only: INFO commandstats over the saturation window, per successful request. */
  redis?: { scriptCalls: number; allCommands: number };
  /** Gateways under BENCH_GC: their collections over the paced window. */
  gc?: GcOverWindow;
  profileWindowUs?: [number, number];
}

interface GcOverWindow {
  scavenges: number;
  /** Full (mark-compact) collections. */
  full: number;
  pauseMsPer1k: number;
  maxPauseMs: number;
  promotedMiBPer1k: number;
}

function gcOver(events: readonly GcEvent[], window: [number, number], requests: number): GcOverWindow {
  const inside = events.filter((event) => event.atMs >= window[0] && event.atMs <= window[1]);
  const per1k = 1000 / Math.max(1, requests);
  return {
    scavenges: inside.filter((event) => event.kind === 's').length,
    full: inside.filter((event) => event.kind !== 's').length,
    pauseMsPer1k: inside.reduce((sum, event) => sum + event.pauseMs, 0) * per1k,
    maxPauseMs: Math.max(0, ...inside.map((event) => event.pauseMs)),
    promotedMiBPer1k: (inside.reduce((sum, event) => sum + event.promotedBytes, 0) / 2 ** 20) * per1k,
  };
}

interface CpuSplit {
  target: number;
  mock: number;
  loadGenerator: number;
  redis: number;
  postgres: number;
  machine: number;
}

/** CPU time so far (ms) of each backend still running, by pid. */
function backendsCpu(pids: number[]): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const pid of pids) if (alive(pid)) cpu.set(pid, safeCpuMs(pid));
  return cpu;
}

function safeCpuMs(pid: number): number {
  try {
    return cpuMs(pid);
  } catch {
    return 0; // exited meanwhile
  }
}

/** What every process involved has used so far (ms); Redis and PostgreSQL only for a gateway. */
function cpuSnapshot(subject: Subject, mockPid: number, backends: number[]) {
  return {
    target: cpuMs(subject.pid),
    mock: cpuMs(mockPid),
    loadGenerator: ownCpuMs(),
    redis: subject.gateway === undefined ? 0 : safeCpuMs(subject.gateway.redis.process.pid as number),
    postgres: backendsCpu(backends),
    machine: machineBusyMs(),
  };
}
type CpuSnapshot = ReturnType<typeof cpuSnapshot>;

const perRequest = (after: CpuSnapshot, before: CpuSnapshot, requests: number): CpuSplit => {
  const n = Math.max(1, requests);
  let postgres = 0;
  for (const [pid, ms] of after.postgres) postgres += ms - (before.postgres.get(pid) ?? 0);
  return {
    target: (after.target - before.target) / n,
    mock: (after.mock - before.mock) / n,
    loadGenerator: (after.loadGenerator - before.loadGenerator) / n,
    redis: (after.redis - before.redis) / n,
    postgres: postgres / n,
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
  mock: Helper,
  /** Re-places every process (new database backends appear as G's pool grows); returns the backends. */
  replace: () => Promise<number[]>,
): Promise<Measured> {
  const mockUrl = mock.url;
  let backends = await replace();
  let splitBefore = cpuSnapshot(subject, mock.pid, backends);
  let splitAfter = splitBefore;
  let upstreamBefore: MockCounts = { connections: 0, requests: 0 };
  let upstreamAfter: MockCounts = { connections: 0, requests: 0 };
  let redisBefore = new Map<string, number>();
  let redisAfter = new Map<string, number>();
  const stats = subject.gateway?.stats;
  const window: [number, number] = [0, 0];
  const saturation = await saturate({
    target: subject.request({ stream: false, tokens: MAX_TOKENS }),
    connections: CONNECTIONS,
    warmupMs: WARMUP_MS,
    durationMs: SECONDS * 1000,
    onMeasureStart: async () => {
      backends = await replace();
      if (stats) redisBefore = await commandCalls(stats);
      upstreamBefore = await mockCounts(mockUrl);
      splitBefore = cpuSnapshot(subject, mock.pid, backends);
      window[0] = monotonicUs();
    },
    onMeasureEnd: async () => {
      window[1] = monotonicUs();
      splitAfter = cpuSnapshot(subject, mock.pid, backends);
      upstreamAfter = await mockCounts(mockUrl);
      if (stats) redisAfter = await commandCalls(stats);
    },
  });
  let pacedCpuBefore = 0;
  let pacedCpuAfter = 0;
  const pacedWindow: [number, number] = [0, 0];
  const latency = await paced({
    target: subject.request({ stream: false, tokens: MAX_TOKENS }),
    ratePerSecond: RATE_PER_SECOND,
    warmupMs: WARMUP_MS,
    durationMs: LATENCY_SECONDS * 1000,
    maxSockets: CONNECTIONS,
    onMeasureStart: () => {
      pacedCpuBefore = cpuMs(subject.pid);
      pacedWindow[0] = performance.now();
    },
    onMeasureEnd: () => {
      pacedCpuAfter = cpuMs(subject.pid);
      pacedWindow[1] = performance.now();
    },
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
  const split = perRequest(splitAfter, splitBefore, saturation.requests);
  const measured: Measured = {
    name: subject.name,
    saturation,
    cpuMsPerRequest: split.target,
    cpuBreakdown: split,
    // Minus the /stats call itself (one connection of its own, as fetch does not reuse ours).
    upstreamConnectionsPerRequest:
      (upstreamAfter.connections - upstreamBefore.connections - 1) /
      Math.max(1, upstreamAfter.requests - upstreamBefore.requests),
    latency,
    cpuMsPerPacedRequest: (pacedCpuAfter - pacedCpuBefore) / Math.max(1, latency.sent),
    streaming,
    cpuMsPerStream: (streamCpuAfter - streamCpuBefore) / Math.max(1, streaming.requests),
    stream20Ms: stream20.p50Ms,
    stream1Ms: stream1.p50Ms,
    rss: rssMiB(subject.pid),
    profileWindowUs: window,
  };
  // Read after the streaming runs: V8's trace lines reach the pipe in blocks, some a while later.
  if (GC_TRACE && subject.gateway !== undefined)
    measured.gc = gcOver(subject.gateway.gateway.gc, pacedWindow, latency.sent);
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

async function roundTrips(subject: Subject): Promise<Monitored & { requests: number }> {
  const running = subject.gateway as RunningGateway;
  const health = (await (await fetch(`${running.gateway.url}/health`)).json()) as {
    scripts: { name: string; version: number; sha1: string }[];
  };
  const shaNames = new Map(
    health.scripts.map((script) => [script.sha1, `${script.name}.v${script.version}`]),
  );
  const client = new Redis(running.redis.url, { lazyConnect: true });
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

/** One gateway of GATEWAYS, ready, with its tenants. */
async function startGatewayTarget(target: GatewayTarget, mock: Helper): Promise<RunningGateway> {
  const redis = await startRedisServer();
  track(redis.process);
  const stats = new Redis(redis.url);
  stats.on('error', () => {});
  const database = process.env.DATABASE_URL
    ? await createTestDatabase(process.env.DATABASE_URL, { migrate: false })
    : undefined;
  const upstream: UpstreamMode =
    G_UPSTREAM === 'openai' ? { kind: 'openai', mockUrl: mock.url } : { kind: 'local', tokens: 4_096 };
  const startedAt = performance.now();
  const gateway = await startGateway({
    redisUrl: redis.url,
    databaseUrl: database?.url,
    upstream,
    profile: PROFILE && target === GATEWAYS[0],
    nodeFlags: [...G_NODE_FLAGS, ...(target.nodeFlags ?? [])],
    gcTrace: GC_TRACE,
    env: target.env,
    ...(target.dir === undefined ? {} : { dir: target.dir }),
    ...(G_LOG === undefined ? {} : { logFile: G_LOG }),
  });
  const bootMs = performance.now() - startedAt;
  const readyRssMiB = rssMiB(gateway.pid).now;
  const [probeTenant, ...tenants] = await createTenants(gateway, {
    count: TENANTS + 1,
    creditMicro: CREDIT_MICRO,
    concurrency: 4,
  });
  return {
    target,
    gateway,
    redis,
    stats,
    database,
    tenants,
    probeTenant: probeTenant as Tenant,
    bootMs,
    readyRssMiB,
    setupMs: performance.now() - startedAt - bootMs,
  };
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

interface Pass {
  name: PassName;
  /** 1-based; the targets run in the opposite order in every other round. */
  round: number;
  results: Measured[];
  loadAtStart: string;
}

interface GatewayDetails {
  running: RunningGateway;
  trips: Monitored & { requests: number };
  slow: SlowStreams;
  probe: string;
  logged: [string, number][];
}

const load = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');

async function main(): Promise<void> {
  const notes: string[] = [];
  const cores = pinningCores();
  const pinning = 'reason' in cores ? undefined : cores;
  notes.push(`machine load average (1/5/15 min) at start: ${load()}`);
  const gateways: RunningGateway[] = [];
  let profile: ProfileSummary | undefined;
  let brRedis: RedisServer | undefined;
  try {
    // No helper threads, so that it can run at SCHED_FIFO (pinning.ts's setRealtime).
    const mock = await startHelper('./mock-upstream.ts', {}, ['--single-threaded']);
    const proxyB = await startHelper('./proxy-node.ts', { UPSTREAM_URL: mock.url });
    const proxyB2 = await startHelper('./proxy-hono-fetch.ts', { UPSTREAM_URL: mock.url });
    brRedis = await startRedisServer();
    track(brRedis.process);
    const proxyBR = await startHelper('./proxy-node-redis.ts', {
      UPSTREAM_URL: mock.url,
      REDIS_URL: brRedis.url,
      BR_TENANTS: String(TENANTS),
    });
    for (const target of GATEWAYS) gateways.push(await startGatewayTarget(target, mock));
    for (const running of gateways) {
      notes.push(
        `${running.target.name}: ${running.target.label}; UPSTREAM=${G_UPSTREAM}${G_UPSTREAM === 'openai' ? ' (the same mock as A)' : ' (built-in model: NOT the same upstream as A/B/B2)'}` +
          `${
            Object.keys(running.target.env).length === 0
              ? ''
              : `, ${Object.entries(running.target.env)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(' ')}`
          }; ` +
          `Redis of its own, database ${running.database ? 'a fresh one on DATABASE_URL' : "PGlite in a temp DATA_DIR (in G's process)"}; ` +
          `ready in ${(running.bootMs / 1000).toFixed(1)} s with RSS ${running.readyRssMiB.toFixed(0)} MiB; ${TENANTS} tenants set up in ${(running.setupMs / 1000).toFixed(1)} s`,
      );
    }

    const subjects: Subject[] = [
      plainSubject('A', 'upstream (mock) directly', mock.pid, mock.url),
      plainSubject('B', 'node:http proxy', proxyB.pid, proxyB.url),
      plainSubject('B2', 'Hono + fetch proxy', proxyB2.pid, proxyB2.url),
      plainSubject('BR', 'B + admit and finalize in Redis', proxyBR.pid, proxyBR.url),
      ...gateways.map(gatewaySubject),
      // A and B are every ratio's reference: always measured.
    ].filter(
      (subject) => TARGETS === undefined || TARGETS.has(subject.name) || ['A', 'B'].includes(subject.name),
    );
    for (const subject of subjects) await probe(subject);
    const everyone: Processes = {
      mock: mock.pid,
      targets: subjects.map((subject) => subject.pid),
      redis: [
        ...gateways.map((running) => running.redis.process.pid as number),
        brRedis.process.pid as number,
      ],
      databaseUrls: gateways.flatMap((running) => (running.database?.url ? [running.database.url] : [])),
    };

    const passes: Pass[] = [];
    for (const name of PASSES) {
      if (name === 'pinned' && pinning === undefined) {
        notes.push(`pinned pass skipped: ${(cores as { reason: string }).reason}`);
        continue;
      }
      for (let round = 1; round <= ROUNDS; round++) {
        const pass: Pass = { name, round, results: [], loadAtStart: load() };
        const order = round % 2 === 1 ? subjects : [...subjects].reverse();
        for (const subject of order) {
          process.stderr.write(
            `${name}${ROUNDS > 1 ? ` round ${round}` : ''}: measuring ${subject.name} …\n`,
          );
          const placeFor = () => place(everyone, name === 'pinned' ? pinning : undefined, subject.pid);
          pass.results.push(await measure(subject, mock, placeFor));
        }
        pass.results.sort(
          (x, y) =>
            subjects.findIndex((s) => s.name === x.name) - subjects.findIndex((s) => s.name === y.name),
        );
        passes.push(pass);
      }
    }

    // Round trips and slow streams: pinned when the machine allows (they do not depend on it much).
    const details: GatewayDetails[] = [];
    for (const subject of subjects.filter((s) => s.gateway !== undefined && DETAILS)) {
      const running = subject.gateway as RunningGateway;
      await place(everyone, pinning, subject.pid);
      process.stderr.write(`${subject.name}: round trips under MONITOR …\n`);
      const trips = await roundTrips(subject);
      process.stderr.write(`${subject.name}: ${SLOW_STREAMS} slow streams …\n`);
      const slow = await slowStreams(subject);
      const probeNote = await oneTenantProbe(running.gateway, running.probeTenant);
      details.push({ running, trips, slow, probe: probeNote, logged: [] });
    }
    await place(everyone, undefined, undefined);

    for (const detail of details) {
      await detail.running.gateway.stop();
      detail.logged = [...detail.running.gateway.logCounts].sort((x, y) => y[1] - x[1]);
    }
    const first = gateways[0];
    const firstMeasured = passes[0]?.results.find((r) => r.name === first?.target.name);
    if (PROFILE && first?.gateway.profileDir && firstMeasured?.profileWindowUs) {
      // node writes the profile at exit: stopped above only when details were measured.
      await first.gateway.stop();
      profile = await summarizeProfile(first.gateway.profileDir, firstMeasured.profileWindowUs, 20);
    }
    notes.push(`machine load average at the end: ${load()} (other work on this machine skews every row)`);
    print({ passes, details, notes, profile, subjects, pinning });
  } finally {
    for (const running of gateways) {
      await running.gateway.stop().catch(() => {});
      await running.database?.drop().catch(() => {});
      running.stats.disconnect();
      await running.redis.stop();
    }
    await brRedis?.stop();
    killAll();
  }
}

function print(run: {
  passes: Pass[];
  details: GatewayDetails[];
  notes: string[];
  profile: ProfileSummary | undefined;
  subjects: Subject[];
  pinning: Cores | undefined;
}): void {
  const gatewayNames = new Set(run.subjects.filter((s) => s.gateway !== undefined).map((s) => s.name));
  const out: string[] = [
    `bench:gateway — loopback, ${CONNECTIONS} connections closed-loop for ${SECONDS} s (after ${WARMUP_MS / 1000} s warm-up); ` +
      `latency open-loop at ${RATE_PER_SECOND} req/s evenly paced for ${LATENCY_SECONDS} s, from the scheduled send time;`,
    `requests: POST ${CHAT} {model:'${POOL}', messages:[{role:'user',content:'hi'}], max_tokens:${MAX_TOKENS}}; streams: stream:true, ${STREAM_CHUNKS} chunks + usage + [DONE]`,
    `targets: ${run.subjects.map((s) => `${s.name} ${s.label}`).join('; ')}`,
    ...run.notes,
    `note: ${TENANT_LIMITS_NOTE}`,
  ];
  for (const pass of run.passes) {
    const byName = new Map(pass.results.map((r) => [r.name, r]));
    const a = byName.get('A') as Measured;
    const b = byName.get('B') as Measured;
    out.push(
      '',
      pass.name === 'pinned'
        ? `PINNED${ROUNDS > 1 ? ` round ${pass.round}` : ''}: the target alone on core ${run.pinning?.target}; load generator, mock, Redis, database backends and the idle targets on core ${run.pinning?.others}, mock and Redis at SCHED_FIFO (load average at the pass's start ${pass.loadAtStart})`
        : `UNPINNED${ROUNDS > 1 ? ` round ${pass.round}` : ''}: every process on every core at normal priority (load average at the pass's start ${pass.loadAtStart})`,
      table(
        [
          'target',
          'req/s',
          'CPU ms/req',
          'CPU ms/req @500',
          'p50 ms',
          'p99 ms',
          'stream req/s',
          'CPU ms/stream',
          'stream ms',
          'RSS MiB',
          'Redis CPU ms/inf',
          'Redis cmds/inf',
          'failed',
        ],
        pass.results.map((r) => [
          r.name,
          fixed(r.saturation.perSecond, 0),
          fixed(r.cpuMsPerRequest, 3),
          fixed(r.cpuMsPerPacedRequest, 3),
          fixed(r.latency.p50Ms, 2),
          fixed(r.latency.p99Ms, 2),
          fixed(r.streaming.perSecond, 0),
          fixed(r.cpuMsPerStream, 3),
          fixed(r.stream20Ms, 2),
          fixed(r.rss.now, 0),
          r.redis ? fixed(r.cpuBreakdown.redis, 3) : '-',
          r.redis ? fixed(r.redis.allCommands, 1) : '-',
          String(r.saturation.tally.failed + r.latency.tally.failed + r.streaming.tally.failed),
        ]),
      ),
      'ratios to B (CPU: target process only)',
      table(
        [
          'target',
          'CPU/req',
          'CPU/req @500',
          'CPU/stream',
          'p50 − B ms',
          'p99 − B ms',
          'p99 − A ms',
          'req/s',
        ],
        pass.results
          .filter((r) => r !== b && r !== a)
          .map((r) => [
            r.name,
            fixed(r.cpuMsPerRequest / b.cpuMsPerRequest, 2),
            fixed(r.cpuMsPerPacedRequest / b.cpuMsPerPacedRequest, 2),
            fixed(r.cpuMsPerStream / b.cpuMsPerStream, 2),
            fixed(r.latency.p50Ms - b.latency.p50Ms, 2),
            fixed(r.latency.p99Ms - b.latency.p99Ms, 2),
            fixed(r.latency.p99Ms - a.latency.p99Ms, 2),
            fixed(r.saturation.perSecond / b.saturation.perSecond, 2),
          ]),
      ),
      `machine CPU per request over the non-streaming saturation window (ms; ${CORES} cores)`,
      table(
        ['target', 'target', 'mock upstream', 'load generator', 'Redis', 'PostgreSQL', 'whole machine'],
        pass.results.map((r) => [
          r.name,
          fixed(r.cpuBreakdown.target, 3),
          fixed(r.cpuBreakdown.mock, 3),
          fixed(r.cpuBreakdown.loadGenerator, 3),
          gatewayNames.has(r.name) ? fixed(r.cpuBreakdown.redis, 3) : '-',
          gatewayNames.has(r.name) ? fixed(r.cpuBreakdown.postgres, 3) : '-',
          fixed(r.cpuBreakdown.machine, 3),
        ]),
      ),
      `failed: answers not 200 (or streams without [DONE]); statuses: ${pass.results
        .map((r) => `${r.name} ${r.saturation.tally.describe()} / ${r.streaming.tally.describe()}`)
        .join('; ')}`,
      `new upstream connections per upstream request (saturation): ${pass.results.map((r) => `${r.name} ${fixed(r.upstreamConnectionsPerRequest, 3)}`).join(', ')} (keep-alive: ≈ 0)`,
      `load generator timer slack (send − schedule) p99: ${pass.results.map((r) => `${r.name} ${fixed(r.latency.sendLagP99Ms, 2)} ms`).join(', ')}`,
    );
    const traced = pass.results.filter((r) => r.gc !== undefined);
    if (traced.length > 0)
      out.push(
        `garbage collection over the paced window (BENCH_GC=1, the gateway's --trace-gc-nvp; per 1,000 requests)`,
        table(
          ['target', 'scavenges', 'full GCs', 'pause ms/1k', 'max pause ms', 'promoted MiB/1k'],
          traced.map((r) => {
            const gc = r.gc as GcOverWindow;
            return [
              r.name,
              String(gc.scavenges),
              String(gc.full),
              fixed(gc.pauseMsPer1k, 1),
              fixed(gc.maxPauseMs, 1),
              fixed(gc.promotedMiBPer1k, 2),
            ];
          }),
        ),
      );
  }
  if (ROUNDS > 1) out.push(...medians(run.passes, gatewayNames));
  out.push(
    '',
    'req/s, CPU ms/req: non-streaming saturation; CPU of the target process only (Δ utime+stime in /proc ÷ requests).',
    `CPU ms/req @500: the same over the paced window. p50/p99 @ ${RATE_PER_SECOND} req/s. stream req/s, CPU ms/stream: streaming saturation.`,
    `stream ms: median time of one ${STREAM_CHUNKS}-chunk stream, one at a time. RSS: VmRSS after its runs.`,
    'Redis CPU ms/inf, cmds/inf (gateways): the Redis process CPU and INFO commandstats calls (Lua’s own included)',
    '  over the saturation window, per successful request.',
  );

  for (const detail of run.details) {
    const name = detail.running.target.name;
    const { trips, slow } = detail;
    // The request path's calls, apart from the spend recorder's, the jobs' and the watched caches'
    // own (an outbox acknowledgement sent alone, for a tenant idle 500 ms after its row was written,
    // is off the path). tenant_index_mark stays on it: admit waits for it once a period per tenant.
    const perRequest = (calls: [string, number][]) =>
      calls.reduce((sum, [, n]) => sum + n, 0) / Math.max(1, trips.requests);
    const offPath = (command: string) =>
      /^evalsha (outbox_ack|outbox_read|budget_reap|tenant_index_(page|prune)|epoch|lease_|fencing_cas|snapshot|rebase)/.test(
        command,
      );
    const tripsPerRequest = perRequest([...trips.fromClients].filter(([command]) => !offPath(command)));
    const offPathPerRequest = perRequest([...trips.fromClients].filter(([command]) => offPath(command)));
    const logged = detail.logged;
    out.push(
      '',
      `${name} details`,
      `- ${detail.probe}`,
      `- Redis, MONITOR over ${trips.requests} sequential requests: ${[...trips.fromClients]
        .sort((x, y) => y[1] - x[1])
        .map(([label, count]) => `${label} ${fixed(count / Math.max(1, trips.requests), 2)}`)
        .join(
          ', ',
        )} per request; commands run inside Lua ${fixed(trips.insideLua / Math.max(1, trips.requests), 1)} per request`,
      `- ${SLOW_STREAMS} concurrent slow streams (${SLOW_CHUNKS} chunks × ${SLOW_DELAY_MS} ms): ${slow.ok} complete (${slow.tally.describe()}) in ${fixed(slow.wallMs / 1000, 1)} s; ` +
        `RSS ${fixed(slow.rssBaselineMiB, 0)} MiB before, ${fixed(slow.rssPeakMiB, 0)} MiB peak (sampled every 100 ms)`,
      `- logged ${logged.reduce((sum, [, n]) => sum + n, 0)} lines at warn or above${
        logged.length === 0
          ? ''
          : `: ${logged
              .slice(0, 5)
              .map(([msg, n]) => `"${msg}" ×${n}`)
              .join(', ')}`
      }`,
    );
    for (const pass of run.passes) {
      const byName = new Map(pass.results.map((r) => [r.name, r]));
      const g = byName.get(name) as Measured;
      const a = byName.get('A') as Measured;
      const b = byName.get('B') as Measured;
      const marginalMs = (g.stream20Ms - g.stream1Ms - (a.stream20Ms - a.stream1Ms)) / (STREAM_CHUNKS - 1);
      out.push(
        `- ${pass.name}${ROUNDS > 1 ? ` round ${pass.round}` : ''}: streaming overhead per token (G − A) ${STREAM_CHUNKS}-chunk stream time ÷ ${STREAM_CHUNKS} = ${fixed((g.stream20Ms - a.stream20Ms) / STREAM_CHUNKS, 3)} ms; ` +
          `marginal ${fixed(marginalMs, 3)} ms per extra token; RSS peak over the run (VmHWM) ${fixed(g.rss.peak, 0)} MiB`,
      );
      if (pass.name !== 'pinned') continue;
      out.push(
        `  goals of issue 18 (pinned pass${ROUNDS > 1 ? ` round ${pass.round}` : ''}):`,
        `  ${mark(g.cpuMsPerRequest <= GOAL_CPU_RATIO * b.cpuMsPerRequest)} CPU per request at saturation ≤ ${GOAL_CPU_RATIO} × B: ${fixed(g.cpuMsPerRequest / b.cpuMsPerRequest, 2)} × (${fixed(g.cpuMsPerRequest, 3)} vs ${fixed(b.cpuMsPerRequest, 3)} ms)`,
        `  ${mark(g.cpuMsPerStream <= GOAL_STREAM_CPU_RATIO * b.cpuMsPerStream)} CPU per ${STREAM_CHUNKS}-chunk stream ≤ ${GOAL_STREAM_CPU_RATIO} × B: ${fixed(g.cpuMsPerStream / b.cpuMsPerStream, 2)} × (${fixed(g.cpuMsPerStream, 3)} vs ${fixed(b.cpuMsPerStream, 3)} ms)`,
        `  ${mark(g.latency.p99Ms - b.latency.p99Ms <= GOAL_ADDED_P99_OVER_B_MS)} p99 at ${RATE_PER_SECOND} req/s − B's ≤ ${GOAL_ADDED_P99_OVER_B_MS} ms: ${fixed(g.latency.p99Ms - b.latency.p99Ms, 2)} ms (${fixed(g.latency.p99Ms, 2)} vs ${fixed(b.latency.p99Ms, 2)})`,
      );
      // The floor: B with the two store calls alone; what the CPU goal leaves for the rest of G.
      const br = byName.get('BR');
      if (br !== undefined)
        out.push(
          `  floor BR (B + admit + finalize, nothing else): ${fixed(br.cpuMsPerRequest / b.cpuMsPerRequest, 2)} × B per request at saturation — ` +
            `the goal leaves ${fixed(GOAL_CPU_RATIO * b.cpuMsPerRequest - br.cpuMsPerRequest, 3)} ms for the rest of G's work, which takes ${fixed(g.cpuMsPerRequest - br.cpuMsPerRequest, 3)} ms`,
        );
    }
    out.push(
      `  ${mark(tripsPerRequest <= GOAL_ROUND_TRIPS + 0.05)} Redis round trips per request = ${GOAL_ROUND_TRIPS}: ${fixed(tripsPerRequest, 2)} on the request path (+ ${fixed(offPathPerRequest, 2)} of the spend recorder's and jobs' own calls)`,
      `  ${mark(slow.ok >= GOAL_SLOW_STREAMS && slow.rssPeakMiB <= GOAL_SLOW_RSS_MIB)} ≥ ${GOAL_SLOW_STREAMS} concurrent slow streams with peak RSS ≤ ${GOAL_SLOW_RSS_MIB} MB: ${slow.ok} complete, peak ${fixed(slow.rssPeakMiB, 0)} MiB`,
      `  ${mark(detail.running.readyRssMiB <= GOAL_IDLE_RSS_MIB)} idle RSS (ready, before any request) ≤ ${GOAL_IDLE_RSS_MIB} MB: ${fixed(detail.running.readyRssMiB, 0)} MiB`,
    );
  }
  if (run.profile) {
    out.push(
      '',
      `${GATEWAYS[0]?.name} CPU profile (--cpu-prof), first pass's non-streaming saturation window only: ${run.profile.samples} samples over ${fixed(run.profile.windowMs / 1000, 1)} s; self time`,
      'by module:',
      ...run.profile.modules.map((m) => `  ${fixed(m.share * 100, 1).padStart(5)} %  ${m.name}`),
      'by function:',
      ...run.profile.functions.map((f) => `  ${fixed(f.share * 100, 1).padStart(5)} %  ${f.name}`),
    );
  }
  console.log(out.join('\n'));
}

/** Per pass, each target's median over the rounds of its CPU figures, and their ratios to B's medians. */
function medians(passes: Pass[], gateways: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const name of new Set(passes.map((pass) => pass.name))) {
    const rounds = passes.filter((pass) => pass.name === name);
    const names = (rounds[0] as Pass).results.map((r) => r.name);
    const median = (target: string, figure: (r: Measured) => number) => {
      const values = rounds
        .map((pass) => pass.results.find((r) => r.name === target))
        .filter((r): r is Measured => r !== undefined)
        .map(figure)
        .sort((x, y) => x - y);
      const middle = values.length >> 1;
      return values.length % 2 === 1
        ? (values[middle] as number)
        : ((values[middle - 1] as number) + (values[middle] as number)) / 2;
    };
    // `ratio`: also shown ÷ B's median; `gateway`: a figure only gateways have.
    type Figure = [string, (r: Measured) => number, 'ratio' | 'plain' | 'gateway'];
    const gcFigures: Figure[] = [
      ['GC pause ms/1k @500', (r) => r.gc?.pauseMsPer1k ?? Number.NaN, 'gateway'],
      ['promoted MiB/1k @500', (r) => r.gc?.promotedMiBPer1k ?? Number.NaN, 'gateway'],
    ];
    const figures: Figure[] = [
      ['CPU ms/req', (r) => r.cpuMsPerRequest, 'ratio'],
      ['CPU ms/req @500', (r) => r.cpuMsPerPacedRequest, 'ratio'],
      ['CPU ms/stream', (r) => r.cpuMsPerStream, 'ratio'],
      ['p99 ms @500', (r) => r.latency.p99Ms, 'plain'],
      ['Redis CPU ms/inf', (r) => r.cpuBreakdown.redis, 'gateway'],
      ...(GC_TRACE ? gcFigures : []),
    ];
    out.push(
      '',
      `${name.toUpperCase()}: medians over ${rounds.length} rounds (÷ B's median)`,
      table(
        ['target', ...figures.map(([label]) => label)],
        names.map((target) => [
          target,
          ...figures.map(([, figure, kind]) => {
            const value = median(target, figure);
            if (kind === 'gateway') return gateways.has(target) ? fixed(value, 3) : '-';
            if (kind === 'plain' || target === 'B') return fixed(value, 3);
            return `${fixed(value, 3)} (${fixed(value / median('B', figure), 2)})`;
          }),
        ]),
      ),
    );
  }
  return out;
}

// Explicit exits: a stray keep-alive socket must not keep the bench alive; 'exit' kills the children.
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
