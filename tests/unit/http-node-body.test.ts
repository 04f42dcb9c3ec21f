import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cancellation } from '../../src/cancellation.js';
import { nodeHttpClient } from '../../src/upstream/http-node.js';

/**
 * The Node upstream client's body: what one socket read brought arrives as one chunk, so a burst
 * of SSE events is parsed, relayed and written once. A loopback server writes its bursts corked
 * (one writev: one segment, one read on the client) as chunked-encoding chunks, each a 'data'
 * event of its own in the client's parser.
 */
const EVENTS = ['data: one\n\n', 'data: two\n\n', 'data: three\n\n'];
let url = '';
let next: (response: ServerResponse) => Promise<void>;
const server = createServer((request, response) => {
  request.resume();
  response.writeHead(200, { 'content-type': 'text/event-stream' });
  void next(response);
});

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** Writes the events in one corked burst (ending the body in it when `end`). */
function burst(response: ServerResponse, events: string[], end = false): void {
  response.cork();
  for (const event of events) response.write(event);
  if (end) response.end();
  process.nextTick(() => response.uncork());
}

/** Resolved when the client has taken the next chunk: the server's cue for its next burst. */
let taken: { promise: Promise<void>; resolve(): void };
function expectTake(): void {
  let resolve = () => {};
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  taken = { promise, resolve };
}

async function chunksOf(serve: (response: ServerResponse) => Promise<void>): Promise<string[]> {
  next = serve;
  expectTake();
  const client = nodeHttpClient();
  try {
    const response = await client.request({
      method: 'GET',
      url,
      headers: {},
      signal: new Cancellation().signal,
      connectTimeoutMs: 2_000,
    });
    const chunks: string[] = [];
    for await (const chunk of response.body) {
      chunks.push(Buffer.from(chunk).toString('utf8'));
      const { resolve } = taken;
      expectTake();
      resolve();
    }
    return chunks;
  } finally {
    client.close?.();
  }
}

describe('the Node client reads an upstream body', () => {
  it('takes the events of one read as one chunk, each later burst as its own', async () => {
    const chunks = await chunksOf(async (response) => {
      // Each burst only once the client took the one before: never two in one read.
      burst(response, EVENTS);
      await taken.promise;
      burst(response, ['data: four\n\n', 'data: five\n\n']);
      await taken.promise;
      response.end();
    });
    expect(chunks).toEqual([EVENTS.join(''), 'data: four\n\ndata: five\n\n']);
  });

  it('keeps every event that arrives in the same read as the end of the body', async () => {
    const chunks = await chunksOf(async (response) => burst(response, EVENTS, true));
    expect(chunks.join('')).toBe(EVENTS.join(''));
    expect(chunks).toHaveLength(1);
  });

  it('gives a slow stream its events one by one, as they come', async () => {
    const chunks = await chunksOf(async (response) => {
      for (const event of EVENTS) {
        response.write(event);
        await taken.promise;
      }
      response.end();
    });
    expect(chunks).toEqual(EVENTS);
  });
});
