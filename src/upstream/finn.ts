import * as v from 'valibot';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../observability/logger.js';
import type { SigningKeys } from '../signing/keys.js';
import { signS2sToken } from '../signing/tokens.js';
import { CONTRACT_VERSION } from '../version.js';
import type { HttpClient, HttpResponse } from './http.js';
import type { UpstreamProtocol, UpstreamReader } from './http-upstream.js';
import { type ContractStatus, isTokenCount, UpstreamUnavailable, type UpstreamUsage } from './port.js';

// 30 s: a redeployed upstream with another contract is noticed within half a minute.
export const CONTRACT_CHECK_INTERVAL_MS = 30_000;

const Count = v.custom<number>(isTokenCount, 'must be a token count');
const KNOWN_EVENTS = new Set(['token', 'done', 'error']);
const FinnEvent = v.variant('type', [
  v.object({ type: v.literal('token'), content: v.string() }),
  v.object({
    type: v.literal('done'),
    usage: v.optional(v.object({ prompt_tokens: v.optional(Count), completion_tokens: Count })),
  }),
  v.object({ type: v.literal('error'), code: v.optional(v.string()) }),
]);
const FinnHealth = v.object({ contract_version: v.pipe(v.string(), v.regex(/^\d+\.\d+\.\d+$/)) });

/**
 * finn, the S2S contract v1.0.0 (DESIGN.md §4): `POST <UPSTREAM_URL>/api/v1/inference` with an
 * ES256 token from our JWKS; SSE `token` events then a `done` event (with usage when finn counts);
 * headers `X-Pool-Used`, `X-Personality-Id`, `X-Token-Count`. `GET <UPSTREAM_URL>/health` answers
 * `{"contract_version":"x.y.z"}`: another major version means incompatible (we refuse to route),
 * another minor version only warns.
 */
export function finnProtocol(deps: {
  url: string;
  http: HttpClient;
  signing: SigningKeys;
  config: Config;
  clock: Clock;
  log: Logger;
  connectTimeoutMs: number;
}): UpstreamProtocol {
  const base = deps.url.replace(/\/+$/, '');
  let contract: { status: ContractStatus; version?: string } = { status: 'unchecked' };
  let timer: ReturnType<typeof setInterval> | undefined;

  async function checkContract(): Promise<void> {
    const signal = AbortSignal.timeout(deps.connectTimeoutMs * 2);
    let next: typeof contract;
    try {
      const response = await deps.http.request({
        method: 'GET',
        url: `${base}/health`,
        headers: { accept: 'application/json' },
        signal,
        connectTimeoutMs: deps.connectTimeoutMs,
      });
      const parsed = v.safeParse(FinnHealth, await readJson(response));
      next = parsed.success
        ? { status: compare(parsed.output.contract_version), version: parsed.output.contract_version }
        : { status: 'unreachable' };
    } catch {
      next = { status: 'unreachable' };
    }
    if (next.status !== contract.status || next.version !== contract.version) {
      const fields = {
        upstream: 'finn',
        contractVersion: next.version,
        expected: CONTRACT_VERSION,
        status: next.status,
      };
      if (next.status === 'incompatible')
        deps.log.error(fields, 'upstream contract incompatible: not routing to it');
      else if (next.status === 'minor_mismatch' || next.status === 'unreachable')
        deps.log.warn(fields, 'upstream contract check');
      else deps.log.info(fields, 'upstream contract check');
    }
    contract = next;
  }

  return {
    name: 'finn',
    async build(request) {
      const token = await signS2sToken(deps, {
        subject: request.caller.subject,
        tenantId: request.caller.tenantId,
        tier: request.caller.tier,
        pool: request.pool,
        reservationId: request.caller.reservationId,
        keyId: request.caller.keyId,
      });
      return {
        url: `${base}/api/v1/inference`,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          accept: 'text/event-stream',
        },
        body: JSON.stringify({
          ...(request.messages === undefined ? { prompt: request.prompt } : { messages: request.messages }),
          max_tokens: request.maxTokens,
          pool: request.pool,
          stream: true,
        }),
      };
    },
    read: readFinn,
    refusal: () =>
      contract.status === 'incompatible'
        ? `The upstream speaks contract ${contract.version}, not ${CONTRACT_VERSION}`
        : undefined,
    contract: () => ({ ...contract, expected: CONTRACT_VERSION }),
    start() {
      void checkContract();
      timer = setInterval(() => void checkContract(), CONTRACT_CHECK_INTERVAL_MS);
      timer.unref?.();
    },
    stop() {
      clearInterval(timer);
    },
  };
}

function compare(version: string): ContractStatus {
  const [major, minor] = version.split('.');
  const [ourMajor, ourMinor] = CONTRACT_VERSION.split('.');
  if (major !== ourMajor) return 'incompatible';
  return minor === ourMinor ? 'compatible' : 'minor_mismatch';
}

function readFinn(response: HttpResponse): UpstreamReader {
  const counted = Number(response.header('x-token-count'));
  let usage: UpstreamUsage | undefined = isTokenCount(counted) ? { completionTokens: counted } : undefined;
  // After the done event the body is still read to its end, so the connection goes back to the pool.
  let ended = false;
  return {
    // Passed on to the caller as headers: only well-formed values.
    poolUsed: headerValue(response.header('x-pool-used')),
    personalityId: headerValue(response.header('x-personality-id')),
    usage: () => usage,
    body: {
      kind: 'sse',
      events: {
        unterminated: 'The upstream stream ended without a done event',
        ended: () => ended,
        event(data) {
          const json = safeJson(data);
          // Event types a later minor version may add (a ping, metadata) are skipped, not failures.
          const type = (json as { type?: unknown } | null)?.type;
          if (typeof type === 'string' && !KNOWN_EVENTS.has(type)) return undefined;
          const parsed = v.safeParse(FinnEvent, json);
          if (!parsed.success) throw new UpstreamUnavailable('The upstream sent an invalid event');
          const event = parsed.output;
          if (event.type === 'token') return event.content;
          if (event.type === 'error')
            throw new UpstreamUnavailable(`The upstream failed mid-stream (${event.code ?? 'error'})`);
          if (event.usage !== undefined) {
            usage = {
              completionTokens: event.usage.completion_tokens,
              ...(event.usage.prompt_tokens === undefined ? {} : { promptTokens: event.usage.prompt_tokens }),
            };
          }
          ended = true;
          return undefined;
        },
      },
    },
  };
}

function headerValue(value: string | undefined): string | undefined {
  return value !== undefined && /^[A-Za-z0-9._:-]{1,128}$/.test(value) ? value : undefined;
}

export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function readJson(response: HttpResponse): Promise<unknown> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    // 64 KiB: a health answer is a few bytes; anything larger is not one.
    if (size > 65_536) {
      response.discard();
      return undefined;
    }
    chunks.push(chunk);
  }
  return safeJson(Buffer.concat(chunks).toString('utf8'));
}
