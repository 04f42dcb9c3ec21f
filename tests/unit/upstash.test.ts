import { createHash } from 'node:crypto';
import { delay, HttpResponse, http } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import type { AdmitInput } from '../../src/store/contracts.js';
import { StoreUnavailable } from '../../src/store/errors.js';
import { memoryRunner } from '../../src/store/memory/index.js';
import { MemoryKv } from '../../src/store/memory/kv.js';
import { MEMORY_SCRIPTS } from '../../src/store/memory/scripts/index.js';
import type { Reply } from '../../src/store/port.js';
import { SCRIPTS, type ScriptName } from '../../src/store/scripts.generated.js';
import { createStore, type Store } from '../../src/store/typed-store.js';
import { upstashRunner, upstashStore } from '../../src/store/upstash.js';

const API_URL = 'https://fake-upstash.test';
const TOKEN = 'AXsecret-upstash-token-7f3e9c1d';
const log = createLogger({ level: 'silent' });
const NAME_BY_SHA1 = new Map<string, ScriptName>(
  Object.values(SCRIPTS).map((script) => [script.sha1, script.name as ScriptName]),
);

type Result = { result: unknown } | { error: string };

/**
 * The Upstash REST API as @upstash/redis speaks it: POST <url>/ with the command as a JSON array
 * (`["evalsha", sha1, numKeys, ...keys, ...args]`), bearer auth, answer `{"result": …}` or HTTP 400
 * `{"error": "…"}`, strings base64-encoded when the request says `Upstash-Encoding: base64`.
 * Scripts run on the memory engine's ports of the Lua scripts; like Redis, it knows a script's SHA-1
 * only once an EVAL of its source has been seen.
 */
function fakeUpstash(wallClockMs: () => number = Date.now, errorPrefix = '') {
  const kv = new MemoryKv(wallClockMs);
  const loaded = new Set<string>();
  const requests: { command: unknown[]; headers: Headers }[] = [];

  const execute = (command: unknown[]): Result => {
    const [name, ...rest] = command;
    switch (String(name).toLowerCase()) {
      case 'ping':
        return { result: 'PONG' };
      case 'eval':
      case 'evalsha': {
        const [scriptOrSha1, numKeys, ...keysAndArgs] = rest.map(String);
        let sha1 = scriptOrSha1 ?? '';
        if (String(name).toLowerCase() === 'eval') {
          sha1 = createHash('sha1').update(sha1).digest('hex');
          loaded.add(sha1);
        } else if (!loaded.has(sha1)) {
          return { error: 'NOSCRIPT No matching script. Please use EVAL.' };
        }
        const script = NAME_BY_SHA1.get(sha1);
        if (script === undefined) return { error: 'ERR the fake runs only the registered scripts' };
        const n = Number(numKeys);
        kv.tick();
        return { result: MEMORY_SCRIPTS[script](kv, keysAndArgs.slice(0, n), keysAndArgs.slice(n)) };
      }
      default:
        return { error: `ERR unknown command '${String(name)}'` };
    }
  };

  const handler = http.post(`${API_URL}/`, async ({ request }) => {
    const command = (await request.json()) as unknown[];
    requests.push({ command, headers: request.headers });
    if (request.headers.get('authorization') !== `Bearer ${TOKEN}`) {
      return HttpResponse.json({ error: 'Unauthorized' }, { status: 401 });
    }
    const answer = execute(command);
    if ('error' in answer)
      return HttpResponse.json({ error: `${errorPrefix}${answer.error}` }, { status: 400 });
    const base64 = request.headers.get('upstash-encoding') === 'base64';
    return HttpResponse.json(base64 ? { result: encode(answer.result) } : answer);
  });

  return { handler, requests, commandNames: () => requests.map((r) => String(r.command[0])) };
}

function encode(value: unknown): unknown {
  if (typeof value === 'string') return Buffer.from(value).toString('base64');
  return Array.isArray(value) ? value.map(encode) : value;
}

const server = setupServer();

beforeAll(() =>
  server.listen({
    onUnhandledRequest: (request, print) => {
      const { hostname } = new URL(request.url);
      if (hostname === '127.0.0.1' || hostname === 'localhost') return;
      print.error();
    },
  }),
);
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

const NOW_MS = Date.UTC(2026, 0, 15, 12);

const admitInput: AdmitInput = {
  tenantId: 'ten_1',
  keyId: 'key_1',
  pool: 'default',
  reservationId: 'res_01',
  costMicro: 1000n,
  tokenEstimate: 100,
  nowMs: NOW_MS,
  ttlMs: 60_000,
  limits: {
    tenantRpm: null,
    userRpm: null,
    channelRpm: null,
    keyRpm: 10,
    burstCapacity: null,
    burstRefillPerMinute: 0,
    keyTpd: null,
    tenantMonthlyCapMicro: null,
    keyMonthlyCapMicro: null,
  },
};

async function creditAdmitFinalizeSnapshot(store: Store) {
  // A new tenant's balance starts at 0 (tenant creation does this).
  await store.hydrate({ tenantId: 'ten_1', creditedMicro: 0n, committedMicro: 0n, grants: [] });
  const credit = await store.credit({ tenantId: 'ten_1', grantId: 'grant_1', amountMicro: 1_000_000n });
  const admit = await store.admit(admitInput);
  const finalize = await store.finalize({
    tenantId: 'ten_1',
    reservationId: 'res_01',
    actualCostMicro: 600n,
    nowMs: NOW_MS + 1_000,
    spend: { keyId: 'key_1', promptTokens: 30, completionTokens: 50, free: false },
  });
  const snapshot = await store.snapshot('ten_1');
  return { credit, admit, finalize, snapshot };
}

describe('upstash engine over the REST API (msw fake backed by the memory scripts)', () => {
  it('gives the same typed results as the memory engine for credit → admit → finalize → snapshot', async () => {
    // One clock for both, so the outbox entry ids (made from it) compare equal.
    const wallClockMs = () => NOW_MS;
    const fake = fakeUpstash(wallClockMs);
    server.use(fake.handler);

    const viaUpstash = await creditAdmitFinalizeSnapshot(upstashStore({ url: API_URL, token: TOKEN, log }));
    const viaMemory = await creditAdmitFinalizeSnapshot(createStore(memoryRunner({ wallClockMs }), { log }));

    expect(viaUpstash).toEqual(viaMemory);
    expect(viaUpstash.admit).toMatchObject({
      status: 'ADMITTED',
      reservationId: 'res_01',
      tightest: { dimension: 'key_rpm', limit: 10, remaining: 9 },
    });
    expect(viaUpstash.finalize).toEqual({
      status: 'FINALIZED',
      chargedMicro: 600n,
      releasedMicro: 400n,
      driftMicro: 0n,
      outboxEntryId: `${NOW_MS}-0`,
    });
    expect(viaUpstash.snapshot).toEqual({
      creditedMicro: 1_000_000n,
      committedMicro: 600n,
      reservedMicro: 0n,
      availableMicro: 999_400n,
      outboxMicro: 600n,
      present: true,
    });
    expect(new Set(fake.commandNames())).toEqual(new Set(['evalsha', 'eval']));
  });

  it('returns replies exactly as Redis sends them: numeric strings stay strings, numbers stay numbers', async () => {
    // One clock for both, so TTLs in replies compare equal.
    const wallClockMs = () => NOW_MS;
    server.use(fakeUpstash(wallClockMs).handler);
    const upstash = upstashRunner({ url: API_URL, token: TOKEN, log });
    const memory = memoryRunner({ wallClockMs });
    const calls: [ScriptName, string[], string[]][] = [
      ['credit', ['{t:ten_1}'], ['grant_1', '1000000']],
      ['lease_acquire', ['{l:reaper}'], ['123', '1000']],
      ['lease_acquire', ['{l:reaper}'], ['456', '1000']],
      ['debit', ['{t:ten_1}'], ['refund-grant_1', '400000']],
    ];

    expect(await upstash.run('hydrate', ['{t:ten_1}'], ['0', '0', '', '0', '0'])).toStrictEqual(['HYDRATED']);
    expect(await memory.run('hydrate', ['{t:ten_1}'], ['0', '0', '', '0', '0'])).toStrictEqual(['HYDRATED']);
    const replies: Reply[] = [];
    for (const [name, keys, args] of calls) {
      const reply = await upstash.run(name, keys, args);
      expect(reply).toStrictEqual(await memory.run(name, keys, args));
      replies.push(reply);
    }
    expect(replies[0]).toStrictEqual(['CREDITED', 1_000_000, 1_000_000]);
    expect(replies[1]).toStrictEqual(['ACQUIRED', '1']);
    expect(replies[2]?.slice(0, 2)).toStrictEqual(['HELD', '123']);
    expect(typeof replies[2]?.[2]).toBe('number');
    expect(replies[3]).toStrictEqual(['DEBITED', 600_000, 600_000]);
  });

  it('recovers from NOSCRIPT with one EVAL, then uses EVALSHA only', async () => {
    const fake = fakeUpstash();
    server.use(fake.handler);
    const store = upstashStore({ url: API_URL, token: TOKEN, log });
    await store.hydrate({ tenantId: 'ten_1', creditedMicro: 0n, committedMicro: 0n, grants: [] });
    fake.requests.splice(0);

    const first = await store.credit({ tenantId: 'ten_1', grantId: 'grant_1', amountMicro: 5_000n });
    expect(first).toEqual({ status: 'CREDITED', creditedMicro: 5_000n, availableMicro: 5_000n });
    expect(fake.commandNames()).toEqual(['evalsha', 'eval']);
    expect(fake.requests[0]?.command[1]).toBe(SCRIPTS.credit.sha1);
    expect(fake.requests[1]?.command[1]).toBe(SCRIPTS.credit.source);

    const second = await store.credit({ tenantId: 'ten_1', grantId: 'grant_2', amountMicro: 5_000n });
    expect(second).toEqual({ status: 'CREDITED', creditedMicro: 10_000n, availableMicro: 10_000n });
    expect(fake.commandNames()).toEqual(['evalsha', 'eval', 'evalsha']);
    expect(fake.requests[2]?.command.slice(0, 4)).toEqual(['evalsha', SCRIPTS.credit.sha1, 1, '{t:ten_1}']);
  });

  it('finds NOSCRIPT after the words a compatible server puts first, and recovers with one EVAL', async () => {
    // @humanwhocodes/upstash-redis-server answers `Failed to execute Redis command: NOSCRIPT …`.
    const fake = fakeUpstash(Date.now, 'Failed to execute Redis command: ');
    server.use(fake.handler);
    const store = upstashStore({ url: API_URL, token: TOKEN, log });
    await store.hydrate({ tenantId: 'ten_1', creditedMicro: 0n, committedMicro: 0n, grants: [] });
    fake.requests.splice(0);

    const credited = await store.credit({ tenantId: 'ten_1', grantId: 'grant_1', amountMicro: 5_000n });
    expect(credited).toEqual({ status: 'CREDITED', creditedMicro: 5_000n, availableMicro: 5_000n });
    expect(fake.commandNames()).toEqual(['evalsha', 'eval']);
  });

  it('pings through the API; close is a no-op that can be repeated', async () => {
    const fake = fakeUpstash();
    server.use(fake.handler);
    const store = upstashStore({ url: API_URL, token: TOKEN, log });

    await expect(store.ping()).resolves.toBeUndefined();
    expect(fake.commandNames()).toEqual(['ping']);
    await store.close();
    await store.close();
  });

  it('sends the token as a bearer and never logs it', async () => {
    const fake = fakeUpstash();
    const lines: string[] = [];
    const capturing = createLogger({
      level: 'debug',
      destination: { write: (line) => void lines.push(line) },
    });
    const store = upstashStore({ url: API_URL, token: TOKEN, log: capturing });

    server.use(fake.handler);
    await store.credit({ tenantId: 'ten_1', grantId: 'grant_1', amountMicro: 1n });
    await store.ping();
    server.use(http.post(`${API_URL}/`, () => HttpResponse.error()));
    const failure = await store.snapshot('ten_1').catch((error: unknown) => error);

    expect(fake.requests.length).toBeGreaterThan(0);
    for (const { headers } of fake.requests) expect(headers.get('authorization')).toBe(`Bearer ${TOKEN}`);
    expect(failure).toBeInstanceOf(StoreUnavailable);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).toContain('upstash request failed');
    expect(lines.join('\n')).not.toContain(TOKEN);
    expect(String((failure as Error).message)).not.toContain(TOKEN);
  });

  describe('an API that fails or does not answer in time → StoreUnavailable, without a retry loop', () => {
    // Below the default 500 ms deadline, and the slow replies come between the two: a timeoutMs that
    // is ignored lets them through.
    const timeoutMs = 100;
    const slowerThanTimeoutMs = 300;

    /** Answers with `resolver`, keeping each request's signal to see whether the client cut it. */
    function api(resolver: () => Response | Promise<Response>) {
      const signals: AbortSignal[] = [];
      server.use(
        http.post(`${API_URL}/`, ({ request }) => {
          signals.push(request.signal);
          return resolver();
        }),
      );
      return signals;
    }

    // The REST client's default is five retries with backoff; ours: one immediate retry, and only
    // of a request that failed on the network. The deadline is long enough for a retry loop to show.
    const cases = [
      ['HTTP 500', 1, () => HttpResponse.json({ error: 'Internal Server Error' }, { status: 500 })],
      [
        'HTTP 502 with an HTML page',
        1,
        () => new HttpResponse('<html>502 Bad Gateway</html>', { status: 502 }),
      ],
      ['a network error', 2, () => HttpResponse.error()],
    ] as const;

    it.each(cases)('%s: %i request(s)', async (_, requests, resolver) => {
      const signals = api(resolver);
      const store = upstashStore({ url: API_URL, token: TOKEN, log, timeoutMs: 2_000 });

      const error = await store.snapshot('ten_1').catch((thrown: unknown) => thrown);

      expect(error).toBeInstanceOf(StoreUnavailable);
      expect((error as StoreUnavailable).cause).toBeDefined();
      expect(signals).toHaveLength(requests);
    });

    it('a reply slower than timeoutMs (though within the default deadline): the request is aborted', async () => {
      const signals = api(async () => {
        await delay(slowerThanTimeoutMs);
        return HttpResponse.json({ result: ['SNAPSHOT', 0, 0, 0, 0] });
      });
      const store = upstashStore({ url: API_URL, token: TOKEN, log, timeoutMs });

      const error = await store.snapshot('ten_1').catch((thrown: unknown) => thrown);

      expect(error).toBeInstanceOf(StoreUnavailable);
      expect((error as StoreUnavailable).cause).toBeDefined();
      expect(signals).toHaveLength(1);
      expect(signals[0]?.aborted).toBe(true);
    });

    it('ping rejects a reply slower than timeoutMs too, and aborts the request', async () => {
      const signals = api(async () => {
        await delay(slowerThanTimeoutMs);
        return HttpResponse.json({ result: 'PONG' });
      });
      const store = upstashStore({ url: API_URL, token: TOKEN, log, timeoutMs });

      await expect(store.ping()).rejects.toThrow();
      expect(signals).toHaveLength(1);
      expect(signals[0]?.aborted).toBe(true);
    });
  });

  it.each(['', 'Failed to execute Redis command: '])(
    'rethrows an error reply from Redis as is, not as StoreUnavailable (prefix %j)',
    async (prefix) => {
      server.use(
        http.post(`${API_URL}/`, () =>
          HttpResponse.json({ error: `${prefix}ERR something` }, { status: 400 }),
        ),
      );
      const store = upstashStore({ url: API_URL, token: TOKEN, log });

      const error = await store.snapshot('ten_1').catch((thrown: unknown) => thrown);

      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(StoreUnavailable);
      expect((error as Error).message).toContain('ERR something');
    },
  );

  it.each([
    'LOADING Redis is loading the dataset in memory',
    'BUSY Redis is busy running a script',
    "READONLY You can't write against a read only replica.",
    'ERR max requests limit exceeded. Limit: 10000, Usage: 10000',
    'Failed to execute Redis command: BUSY Redis is busy running a script',
  ])('treats the outage reply %j as StoreUnavailable', async (reply) => {
    server.use(http.post(`${API_URL}/`, () => HttpResponse.json({ error: reply }, { status: 400 })));
    const store = upstashStore({ url: API_URL, token: TOKEN, log });
    await expect(store.snapshot('ten_1')).rejects.toBeInstanceOf(StoreUnavailable);
  });
});
