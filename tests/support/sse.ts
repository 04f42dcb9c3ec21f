import type { Harness } from './harness.js';
import type { RedisServer } from './redis-server.js';

/** An event of the native inference stream (DESIGN.md §4), as tests read it. */
export interface SseEvent {
  type: string;
  content?: string;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  cost_micro?: string;
  notional_cost_micro?: string;
  reservation_id?: string;
  /** `pending` when the store failed at finalize after a complete stream; absent when settled. */
  settlement?: string;
  code?: string;
}

/** The `data:` events of a native SSE body, parsed. */
export function events(text: string): SseEvent[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice(6)) as SseEvent);
}

/** POST /api/v1/inference with an API key, through the harness's app. */
export function infer(harness: Harness, key: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return harness.request('/api/v1/inference', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal }),
  });
}

/**
 * Reads a stream whose reservation is made while the harness's own Redis is frozen (SIGSTOP), so
 * finalize meets a store outage; Redis is thawed whatever happens.
 */
export async function readWithStoreFrozen(
  harness: Harness & { redis: RedisServer },
  response: Response,
): Promise<string> {
  harness.redis.process.kill('SIGSTOP');
  try {
    return await response.text();
  } finally {
    harness.redis.process.kill('SIGCONT');
  }
}
