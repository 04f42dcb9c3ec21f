import { createTRPCClient, httpBatchLink, type TRPCClient } from '@trpc/client';
import type { AppRouter } from '../routers/index.js';

export type { AppRouter };

export interface ClientOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** A bearer token: the bootstrap admin token or a JWT. */
  token?: string;
  /** The most calls one request carries: the server's TRPC_MAX_BATCH (default 20) or fewer. */
  maxBatch?: number;
}

/**
 * A typed tRPC client for internal tools: every procedure autocompletes and is type-checked.
 * No transformer: plain JSON, money as decimal strings (DESIGN.md §6). The return type is named so
 * the published declarations refer to `AppRouter` instead of spelling out every procedure.
 */
export function createClient(options: ClientOptions): TRPCClient<AppRouter> {
  const endpoint = new URL('/trpc', options.url).toString();
  const { token } = options;
  return createTRPCClient<AppRouter>({
    links: [
      httpBatchLink({
        url: endpoint,
        // More calls at once go out as several requests: the server refuses a bigger batch whole.
        maxItems: options.maxBatch ?? 20,
        headers: () => (token === undefined ? {} : { authorization: `Bearer ${token}` }),
      }),
    ],
  });
}

export type Client = ReturnType<typeof createClient>;
