import { createParser } from 'eventsource-parser';

/** The `data` of each server-sent event in a byte stream, in order (eventsource-parser does the framing). */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const pending: string[] = [];
  const parser = createParser({ onEvent: (event) => pending.push(event.data) });
  for await (const chunk of body) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    while (pending.length > 0) yield pending.shift() as string;
  }
  parser.feed(decoder.decode());
  while (pending.length > 0) yield pending.shift() as string;
}
