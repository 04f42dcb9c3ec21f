import type { Redis } from 'ioredis';

/** Calls per command name since Redis started (INFO commandstats), Lua's own commands included. */
export async function commandCalls(client: Redis): Promise<Map<string, number>> {
  const text = String(await client.call('INFO', 'commandstats'));
  const calls = new Map<string, number>();
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    calls.set(match[1] as string, Number(match[2]));
  }
  return calls;
}

export function difference(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>();
  for (const [name, count] of after) {
    const grown = count - (before.get(name) ?? 0);
    if (grown > 0) delta.set(name, grown);
  }
  return delta;
}

export interface Monitored {
  /** Commands clients sent (round trips; a pipeline would count each command), by label. */
  fromClients: Map<string, number>;
  /** Commands Lua scripts ran inside Redis. */
  insideLua: number;
}

/**
 * Watches every command Redis executes while `during` runs (MONITOR), telling the ones clients
 * sent from those scripts ran; EVALSHA is labelled with the script's name (`shaNames`). The
 * monitoring connection's and `ignore` connections' commands are left out. MONITOR slows Redis
 * down, so only a short sequential phase runs under it.
 */
export async function monitorCommands(
  monitorClient: Redis,
  shaNames: Map<string, string>,
  ignoreSources: string[],
  during: () => Promise<void>,
): Promise<Monitored> {
  const fromClients = new Map<string, number>();
  let insideLua = 0;
  const monitor = await monitorClient.monitor();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === 'lua') {
      insideLua += 1;
      return;
    }
    if (ignoreSources.includes(source)) return;
    const command = String(args[0]).toLowerCase();
    const label =
      command === 'evalsha'
        ? `evalsha ${shaNames.get(String(args[1])) ?? String(args[1]).slice(0, 8)}`
        : command;
    fromClients.set(label, (fromClients.get(label) ?? 0) + 1);
  });
  try {
    await during();
    // MONITOR lines trail the commands a little.
    await new Promise((resolve) => setTimeout(resolve, 200));
  } finally {
    monitor.disconnect();
  }
  return { fromClients, insideLua };
}
