/** An event of the native inference stream (DESIGN.md §4), as tests read it. */
export interface SseEvent {
  type: string;
  content?: string;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  cost_micro?: string;
  notional_cost_micro?: string;
  reservation_id?: string;
  code?: string;
}

/** The `data:` events of a native SSE body, parsed. */
export function events(text: string): SseEvent[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice(6)) as SseEvent);
}
