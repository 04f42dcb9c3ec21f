/**
 * Start-up phases, recorded as performance measures named `spicegate:<phase>` (by bin/spicegate.js,
 * db/pglite-template.ts and src/entry/node.ts) and logged once with 'spicegate ready', so an
 * operator, and `npm run bench:boot`, see where a slow start went.
 */
const PREFIX = 'spicegate:';

export async function timed<T>(phase: string, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await work();
  } finally {
    performance.measure(`${PREFIX}${phase}`, { start });
  }
}

/**
 * Milliseconds per phase so far, `sinceProcessStart` (Node's clock starts with the process) and
 * `cpu`, the process's CPU time (all threads): on a busy machine wall time stretches, this less.
 */
export function startupMs(): Record<string, number> {
  const phases: Record<string, number> = {};
  for (const entry of performance.getEntriesByType('measure')) {
    if (entry.name.startsWith(PREFIX)) phases[entry.name.slice(PREFIX.length)] = Math.round(entry.duration);
  }
  const { user, system } = process.cpuUsage();
  return {
    ...phases,
    sinceProcessStart: Math.round(performance.now()),
    cpu: Math.round((user + system) / 1000),
  };
}
