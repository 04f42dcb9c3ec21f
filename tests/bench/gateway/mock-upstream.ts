/**
 * A tiny OpenAI-compatible upstream for bench:gateway, run as its own process: `POST
 * /v1/chat/completions` answers JSON with usage, or (`stream: true`) one `data:` chunk per token,
 * a usage chunk and `[DONE]`. It emits `max_tokens` tokens (16 when absent). A last message of
 * `slow <ms>` spaces the stream's chunks by that many milliseconds (the slow-stream test), since
 * a gateway forwards the messages but not custom headers. `GET /stats` counts the connections and
 * chat requests so far (a client that drops keep-alive connections shows there). Prints
 * `{"port":n}` once listening.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

const DEFAULT_TOKENS = 16;
const MAX_TOKENS = 4_096;

interface ChatBody {
  model?: string;
  messages?: { content?: string | null }[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  stream?: boolean | null;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function reply(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
  let body: ChatBody;
  try {
    body = JSON.parse(await readBody(req)) as ChatBody;
  } catch {
    reply(res, 400, { error: { message: 'invalid JSON', type: 'invalid_request_error' } });
    return;
  }
  const requested = body.max_completion_tokens ?? body.max_tokens ?? DEFAULT_TOKENS;
  const tokens = Math.max(1, Math.min(MAX_TOKENS, Math.floor(requested)));
  const last = body.messages?.at(-1)?.content ?? '';
  const delayMs = Number(/^slow (\d+)$/.exec(last)?.[1] ?? 0);
  const promptTokens = Math.max(1, Math.ceil(last.length / 4));
  const model = body.model ?? 'mock';
  const id = 'chatcmpl-mock';
  const usage = {
    prompt_tokens: promptTokens,
    completion_tokens: tokens,
    total_tokens: promptTokens + tokens,
  };

  if (body.stream !== true) {
    let content = '';
    for (let i = 0; i < tokens; i += 1) content += `tok${i} `;
    reply(res, 200, {
      id,
      object: 'chat.completion',
      created: 0,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'length' }],
      usage,
    });
    return;
  }

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 0, model, choices, ...extra })}\n\n`;
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  for (let i = 0; i < tokens && !closed; i += 1) {
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    res.write(chunk([{ index: 0, delta: { content: `tok${i} ` }, finish_reason: null }]));
  }
  if (closed) return;
  res.write(chunk([{ index: 0, delta: {}, finish_reason: 'length' }]));
  res.write(chunk([], { usage }));
  res.end('data: [DONE]\n\n');
}

const counts = { connections: 0, requests: 0 };

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url?.startsWith('/v1/chat/completions')) {
    counts.requests += 1;
    chat(req, res).catch(() => res.destroy());
    return;
  }
  if (req.method === 'GET' && req.url === '/stats') {
    req.resume();
    // One connection per stats call, so a reader can subtract its own calls exactly.
    reply(res, 200, counts, { connection: 'close' });
    return;
  }
  req.resume();
  reply(res, 404, { error: { message: 'not found', type: 'not_found_error' } });
});
server.on('connection', () => {
  counts.connections += 1;
});
// Above the 5 s default, so a client's idle keep-alive socket is never closed under it mid-bench.
server.keepAliveTimeout = 60_000;
server.maxRequestsPerSocket = 0;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  if (typeof address === 'object' && address) console.log(JSON.stringify({ port: address.port }));
});
