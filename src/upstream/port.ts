/** What every upstream (local, finn, openai) offers the relay: a stream of tokens it can abort. */
export interface UpstreamRequest {
  pool: string;
  prompt: string;
  maxTokens: number;
  /** Aborted when the client goes away or the relay stops at the reservation. */
  signal: AbortSignal;
}

export interface UpstreamToken {
  content: string;
}

export interface Upstream {
  readonly name: string;
  stream(request: UpstreamRequest): AsyncIterable<UpstreamToken>;
}
