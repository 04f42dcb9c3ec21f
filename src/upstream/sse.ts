import { createParser } from 'eventsource-parser';

/**
 * The `data` of the server-sent events in a byte stream, in order, one batch per chunk read
 * (eventsource-parser does the framing). Batches, not single events: each async step costs
 * promises, and a whole short completion usually arrives in one or two chunks.
 */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string[]> {
  const decoder = new TextDecoder();
  let pending: string[] = [];
  const parser = createParser({ onEvent: (event) => pending.push(event.data) });
  for await (const chunk of body) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (pending.length === 0) continue;
    yield pending;
    pending = [];
  }
  parser.feed(decoder.decode());
  if (pending.length > 0) yield pending;
}
