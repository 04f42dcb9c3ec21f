import type { Harness } from './harness.js';

/** Calls a procedure the way a plain HTTP client would; returns the status and the parsed body. */
export async function trpc(
  harness: Harness,
  token: string | undefined,
  path: string,
  input?: unknown,
  method: 'GET' | 'POST' = 'GET',
): Promise<{
  status: number;
  body: { result?: { data: unknown }; error?: { message: string; data: Record<string, unknown> } };
}> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const response =
    method === 'POST'
      ? await harness.request(`/trpc/${path}`, {
          method,
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify(input ?? {}),
        })
      : await harness.request(
          `/trpc/${path}${input === undefined ? '' : `?input=${encodeURIComponent(JSON.stringify(input))}`}`,
          { headers },
        );
  return { status: response.status, body: (await response.json()) as never };
}

export function data<T>(result: { body: { result?: { data: unknown } } }): T {
  if (result.body.result === undefined) throw new Error(`no result: ${JSON.stringify(result.body)}`);
  return result.body.result.data as T;
}
