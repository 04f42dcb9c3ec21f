/**
 * What bench:gateway's bare proxies (B, BR) share: forwarding a request to UPSTREAM_URL over a
 * keep-alive agent, and listening on loopback with `{"port":n}` printed once ready.
 */
import { Agent, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';

const upstream = new URL(process.env.UPSTREAM_URL ?? 'http://127.0.0.1:1');
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1_024 });

/** Sends `req` (its body piped) upstream; `answer` gets the upstream's response. 502 when none came. */
export function forward(
  req: IncomingMessage,
  res: ServerResponse,
  answer: (response: IncomingMessage) => void,
): void {
  const headers = { ...req.headers, host: upstream.host };
  const out = request(
    { agent, host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
    answer,
  );
  out.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
}

/** Listens on 127.0.0.1 (PORT, else any port) and prints `{"port":n}` for the bench. */
export function listen(server: Server): void {
  server.keepAliveTimeout = 60_000;
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    const address = server.address();
    if (typeof address === 'object' && address) console.log(JSON.stringify({ port: address.port }));
  });
}
