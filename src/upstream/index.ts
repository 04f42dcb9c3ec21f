import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../observability/logger.js';
import type { SigningKeys } from '../signing/keys.js';
import type { CircuitBreaker } from './breaker.js';
import { finnProtocol } from './finn.js';
import type { HttpClient } from './http.js';
import { fetchHttpClient } from './http-fetch.js';
import { httpUpstream } from './http-upstream.js';
import { localUpstream } from './local.js';
import { openAiProtocol } from './openai.js';
import type { Upstream } from './port.js';

export type { Upstream } from './port.js';

/** Knobs tests turn (shorter backoff, a breaker they can inspect); production uses the defaults. */
export interface UpstreamOverrides {
  http?: HttpClient;
  retryDelaysMs?: readonly number[];
  breaker?: CircuitBreaker;
}

/** The upstream UPSTREAM names, over `http` (the Node entry passes node:http; default `fetch`). */
export function createUpstream(
  config: Config,
  deps: { signing: SigningKeys; clock: Clock; log: Logger },
  overrides: UpstreamOverrides = {},
): Upstream {
  if (config.upstream === 'local' || config.upstreamUrl === undefined) {
    return localUpstream({ tokens: config.localModelTokens, delayMs: config.localModelDelayMs });
  }
  const http = overrides.http ?? fetchHttpClient();
  const protocol =
    config.upstream === 'finn'
      ? finnProtocol({
          url: config.upstreamUrl,
          http,
          signing: deps.signing,
          config,
          clock: deps.clock,
          log: deps.log,
          connectTimeoutMs: config.upstreamConnectTimeoutMs,
        })
      : openAiProtocol({
          url: config.upstreamUrl,
          apiKey: config.upstreamApiKey,
          models: config.upstreamModels,
        });
  return httpUpstream(protocol, {
    http,
    clock: deps.clock,
    log: deps.log,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    timeoutMs: config.upstreamTimeoutMs,
    firstByteTimeoutMs: config.upstreamFirstByteTimeoutMs,
    ...(overrides.retryDelaysMs === undefined ? {} : { retryDelaysMs: overrides.retryDelaysMs }),
    ...(overrides.breaker === undefined ? {} : { breaker: overrides.breaker }),
  });
}
