import type { Upstream, UpstreamRequest, UpstreamToken } from './port.js';

/**
 * The built-in deterministic model (the embedded default, also used by tests and benchmarks):
 * emits `min(LOCAL_MODEL_TOKENS, max_tokens)` tokens, `LOCAL_MODEL_DELAY_MS` apart, and stops at
 * once when the request is aborted.
 */
export function localUpstream(options: { tokens: number; delayMs: number }): Upstream {
  return {
    name: 'local',
    async *stream(request: UpstreamRequest): AsyncGenerator<UpstreamToken> {
      const count = Math.min(options.tokens, request.maxTokens);
      for (let i = 0; i < count; i += 1) {
        if (options.delayMs > 0) await sleep(options.delayMs, request.signal);
        if (request.signal.aborted) return;
        yield { content: i === 0 ? 'tok0' : ` tok${i}` };
      }
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
