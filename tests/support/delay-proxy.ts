import { EventEmitter } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a real server that can hold back the server's replies, to make a
 * request slow on purpose (fault injection; the server itself is untouched).
 */
export interface DelayProxy {
  url: string;
  /** Emits 'clientData' whenever a client sends bytes towards the server. */
  events: EventEmitter;
  setDelay(ms: number): void;
  close(): Promise<void>;
}

export async function startDelayProxy(targetUrl: string): Promise<DelayProxy> {
  const target = new URL(targetUrl);
  const events = new EventEmitter();
  const sockets = new Set<Socket>();
  let delayMs = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.on('data', (data) => {
      events.emit('clientData');
      upstream.write(data);
    });
    upstream.on('data', (data) => {
      // Same delay for every chunk, so replies keep their order.
      setTimeout(() => client.writable && client.write(data), delayMs);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('proxy has no address');
  return {
    url: `${target.protocol}//127.0.0.1:${address.port}`,
    events,
    setDelay: (ms) => {
      delayMs = ms;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
