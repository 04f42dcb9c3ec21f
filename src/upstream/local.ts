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
      tokens: new LocalTokens(options, request),
      usage: () => undefined,
    }),
    status: () => ({ name: 'local', contract: { status: 'not_applicable' }, breaker: 'closed' }),
  };
}

/**
 * The tokens as an iterator class rather than an async generator: objects an async generator
 * holds outlive young-generation collections (see http-upstream.ts TokenIterator).
 */
class LocalTokens implements AsyncIterator<string[]>, AsyncIterable<string[]> {
  private position = 0;
  private readonly count: number;

  constructor(
    private readonly options: { tokens: number; delayMs: number },
    private readonly request: UpstreamRequest,
  ) {
    this.count = Math.min(options.tokens, request.maxTokens);
  }

  [Symbol.asyncIterator](): AsyncIterator<string[]> {
    return this;
  }

  async next(): Promise<IteratorResult<string[]>> {
    const { request } = this;
    if (this.position >= this.count || request.signal.aborted) return this.finish();
    if (this.options.delayMs === 0) {
      // No delay: the whole completion at once, as a fast upstream's first chunk would carry it.
      const batch = Array.from({ length: this.count }, (_, i) => token(i));
      this.position = this.count;
      return { value: batch, done: false };
    }
    await sleep(this.options.delayMs, request.signal);
    if (request.signal.aborted) return this.finish();
    const value = [token(this.position)];
    this.position += 1;
    return { value, done: false };
  }

  async return(): Promise<IteratorResult<string[]>> {
    return this.finish();
  }

  private finish(): IteratorResult<string[]> {
    this.position = this.count;
    return { value: undefined, done: true };
  }
}

const token = (i: number) => (i === 0 ? 'tok0' : ` tok${i}`);
