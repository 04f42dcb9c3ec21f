import { Agent, type IncomingMessage, request } from 'node:http';

/**
 * The load generator of bench:gateway: node:http with keep-alive agents, a closed-loop saturation
 * driver, an open-loop paced driver and a sequential timer. Percentiles come from a sorted
 * Float64Array of every sample (a few tens of thousands per run: exact, and no dependency).
 */

export interface Shot {
  /** Origin, e.g. http://127.0.0.1:8787 */
  url: string;
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** A streamed answer must end with `data: [DONE]`. */
  stream: boolean;
}

/** A fixed request, or one made afresh for every send (G varies its key and user per request). */
export type Target = Shot | (() => Shot);

const picker = (target: Target): (() => Shot) => (typeof target === 'function' ? target : () => target);

export interface Sent {
  status: number;
  ok: boolean;
}

const origins = new Map<string, URL>();

export function shot(url: string, path: string, body: unknown, extraHeaders: Record<string, string>): Shot {
  const bytes = Buffer.from(JSON.stringify(body));
  let origin = origins.get(url);
  if (origin === undefined) {
    origin = new URL(url);
    origins.set(url, origin);
  }
  return {
    url,
    host: origin.hostname,
    port: Number(origin.port),
    path,
    body: bytes,
    stream: (body as { stream?: boolean }).stream === true,
    headers: { 'content-type': 'application/json', 'content-length': String(bytes.length), ...extraHeaders },
  };
}

export function keepAliveAgent(maxSockets: number): Agent {
  return new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
}

/** POSTs a shot on `agent`; `onResponse` reads the answer. */
function post(
  agent: Agent,
  target: Shot,
  onResponse: (res: IncomingMessage) => void,
  onError: (error: Error) => void,
): void {
  const req = request(
    {
      agent,
      host: target.host,
      port: target.port,
      path: target.path,
      method: 'POST',
      headers: target.headers,
    },
    onResponse,
  );
  req.on('error', onError);
  req.end(target.body);
}

/** One request, its whole answer read; `ok` = 200 and, for a stream, the `[DONE]` at the end. */
export function send(agent: Agent, target: Shot): Promise<Sent> {
  return new Promise((resolve) => {
    post(
      agent,
      target,
      (res) => {
        let tail = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (target.stream) tail = (tail + chunk).slice(-64);
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          resolve({ status, ok: status === 200 && (!target.stream || tail.includes('data: [DONE]')) });
        });
        res.on('error', () => resolve({ status: res.statusCode ?? 0, ok: false }));
      },
      () => resolve({ status: 0, ok: false }),
    );
  });
}

/** Reads one answer completely, for the probes that check each target speaks the protocol. */
export function sendForText(agent: Agent, target: Shot): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    post(
      agent,
      target,
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      },
      reject,
    );
  });
}

export class Tally {
  readonly statuses = new Map<number, number>();
  failed = 0;
  add(sent: Sent): void {
    this.statuses.set(sent.status, (this.statuses.get(sent.status) ?? 0) + 1);
    if (!sent.ok) this.failed += 1;
  }
  describe(): string {
    return [...this.statuses].map(([status, count]) => `${status}×${count}`).join(' ');
  }
}

export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

export interface Saturation {
  requests: number;
  perSecond: number;
  tally: Tally;
}

/**
 * Closed loop: `connections` loops, each sending its next request when the previous answer has
 * been read, for `warmupMs` (not counted) then `durationMs`. `onMeasureStart`/`onMeasureEnd` run
 * at the window's edges (CPU and Redis counters are read there).
 */
export async function saturate(options: {
  target: Target;
  connections: number;
  warmupMs: number;
  durationMs: number;
  onMeasureStart?: () => void | Promise<void>;
  onMeasureEnd?: () => void | Promise<void>;
}): Promise<Saturation> {
  const agent = keepAliveAgent(options.connections);
  const next = picker(options.target);
  const tally = new Tally();
  let measuring = false;
  let stop = false;
  let requests = 0;
  const loops = Array.from({ length: options.connections }, async () => {
    while (!stop) {
      const sent = await send(agent, next());
      if (measuring) {
        requests += 1;
        tally.add(sent);
      }
    }
  });
  await sleep(options.warmupMs);
  await options.onMeasureStart?.();
  measuring = true;
  const startedAt = performance.now();
  await sleep(options.durationMs);
  measuring = false;
  const elapsedMs = performance.now() - startedAt;
  await options.onMeasureEnd?.();
  stop = true;
  await Promise.all(loops);
  agent.destroy();
  return { requests, perSecond: (requests * 1000) / elapsedMs, tally };
}

export interface Paced {
  sent: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** How late this process sent requests against their schedule (timer slack), p99 ms. */
  sendLagP99Ms: number;
  tally: Tally;
}

/**
 * Open loop: request i is due at start + i × (1000 / ratePerSecond) ms, computed from the start time,
 * never from when earlier answers came back; a timer fires for the next due request and sends every
 * request due by then (only more than one if the timer itself was late). Latency runs from the
 * *scheduled* time, so a stalled target cannot hide its stall by delaying our sends (no coordinated
 * omission). Requests due during the first `warmupMs` are not counted.
 */
export async function paced(options: {
  target: Target;
  ratePerSecond: number;
  warmupMs: number;
  durationMs: number;
  maxSockets: number;
  /** Run (synchronously) when the first counted request is due, and once the last one answered. */
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
}): Promise<Paced> {
  const agent = keepAliveAgent(options.maxSockets);
  const make = picker(options.target);
  const intervalMs = 1000 / options.ratePerSecond;
  const warmup = Math.round(options.warmupMs / intervalMs);
  const total = warmup + Math.round(options.durationMs / intervalMs);
  const latencies = new Float64Array(total - warmup);
  const lags = new Float64Array(total - warmup);
  const tally = new Tally();
  const startAt = performance.now() + 10;
  let next = 0;
  let answered = 0;
  await new Promise<void>((resolve) => {
    const fire = (i: number, dueAt: number) => {
      const target = make();
      const sentAt = performance.now();
      send(agent, target).then((sent) => {
        if (i >= warmup) {
          latencies[i - warmup] = performance.now() - dueAt;
          lags[i - warmup] = sentAt - dueAt;
          tally.add(sent);
        }
        answered += 1;
        if (answered === total) resolve();
      });
    };
    const tick = () => {
      const now = performance.now();
      while (next < total && startAt + next * intervalMs <= now) {
        if (next === warmup) options.onMeasureStart?.();
        fire(next, startAt + next * intervalMs);
        next += 1;
      }
      if (next < total) setTimeout(tick, Math.max(0, startAt + next * intervalMs - performance.now()));
    };
    setTimeout(tick, 10);
  });
  options.onMeasureEnd?.();
  agent.destroy();
  latencies.sort();
  lags.sort();
  return {
    sent: latencies.length,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies[latencies.length - 1] ?? Number.NaN,
    sendLagP99Ms: percentile(lags, 0.99),
    tally,
  };
}

/** One connection, one request at a time, for `durationMs` after `warmupMs`: the median time. */
export async function sequential(options: {
  target: Target;
  warmupMs: number;
  durationMs: number;
}): Promise<{ requests: number; p50Ms: number; tally: Tally }> {
  const agent = keepAliveAgent(1);
  const next = picker(options.target);
  const tally = new Tally();
  const samples: number[] = [];
  const warmUntil = performance.now() + options.warmupMs;
  while (performance.now() < warmUntil) await send(agent, next());
  const until = performance.now() + options.durationMs;
  while (performance.now() < until) {
    const target = next();
    const startedAt = performance.now();
    const sent = await send(agent, target);
    samples.push(performance.now() - startedAt);
    tally.add(sent);
  }
  agent.destroy();
  const sorted = Float64Array.from(samples).sort();
  return { requests: samples.length, p50Ms: percentile(sorted, 0.5), tally };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
