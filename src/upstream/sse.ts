import { createParser, type EventSourceParser } from 'eventsource-parser';
import { UpstreamUnavailable } from './port.js';

/** What one SSE protocol (finn, OpenAI) makes of its events: the only part that differs. */
export interface EventDecoder {
  /**
   * One event's `data`: the token content it carries, if any. Throws `UpstreamUnavailable` for an
   * error event or one that does not parse. Not called after `ended()`.
   */
  event(data: string): string | undefined;
  /** The end marker (finn's done event, OpenAI's `[DONE]`) has arrived. */
  ended(): boolean;
  /** Why a body that ends before the end marker is a failure. */
  readonly unterminated: string;
}

/**
 * Turns the bytes of a server-sent event stream into token batches, synchronously:
 * eventsource-parser frames the events, the protocol's decoder reads them. The caller's one loop
 * over the body is the only async step per chunk (each async layer costs promises per chunk, and
 * on a slow stream those live long enough to reach the old generation).
 */
export class SseTokens {
  private readonly decoder = new TextDecoder();
  private readonly parser: EventSourceParser;
  private batch: string[] = [];

  constructor(private readonly events: EventDecoder) {
    this.parser = createParser({
      onEvent: (event) => {
        if (events.ended()) return;
        const token = events.event(event.data);
        if (token !== undefined && token !== '') this.batch.push(token);
      },
    });
  }

  /** Feeds one chunk of the body; returns the tokens it completed (undefined: none). */
  feed(chunk: Uint8Array): string[] | undefined {
    this.parser.feed(this.decoder.decode(chunk, { stream: true }));
    return this.take();
  }

  /** The body ended: the tokens still held (see `assertEnded`). */
  end(): string[] | undefined {
    this.parser.feed(this.decoder.decode());
    return this.take();
  }

  /** After the last tokens were relayed: throws when the end marker never came. */
  assertEnded(): void {
    if (!this.events.ended()) throw new UpstreamUnavailable(this.events.unterminated);
  }

  private take(): string[] | undefined {
    if (this.batch.length === 0) return undefined;
    const batch = this.batch;
    this.batch = [];
    return batch;
  }
}
