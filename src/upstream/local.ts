import type { Upstream, UpstreamRequest, UpstreamResponse } from './port.js';
import { sleep } from './sleep.js';

/**
 * The built-in deterministic model (the embedded default, also used by tests and benchmarks):
 * emits `min(LOCAL_MODEL_TOKENS, max_tokens)` tokens, `LOCAL_MODEL_DELAY_MS` apart, and stops at
 * once when the request is aborted. It reports no usage: the gateway's own count is the authority.
 */
export function localUpstream(options: { tokens: number; delayMs: number }): Upstream {
  return {
    name: 'local',
    open: async (request: UpstreamRequest): Promise<UpstreamResponse> => ({
      tokens: generate(options, request),
      usage: () => undefined,
    }),
    status: () => ({ name: 'local', contract: { status: 'not_applicable' }, breaker: 'closed' }),
  };
}

async function* generate(
  options: { tokens: number; delayMs: number },
  request: UpstreamRequest,
): AsyncGenerator<string[]> {
  const count = Math.min(options.tokens, request.maxTokens);
  const token = (i: number) => (i === 0 ? 'tok0' : ` tok${i}`);
  if (options.delayMs === 0) {
    // No delay: the whole completion at once, as a fast upstream's first chunk would carry it.
    if (count > 0 && !request.signal.aborted) yield Array.from({ length: count }, (_, i) => token(i));
    return;
  }
  for (let i = 0; i < count; i += 1) {
    await sleep(options.delayMs, request.signal);
    if (request.signal.aborted) return;
    yield [token(i)];
  }
}
