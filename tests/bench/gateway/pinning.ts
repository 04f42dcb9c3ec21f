import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import postgres from 'postgres';

/**
 * Where bench:gateway's processes run (taskset, chrt and renice from util-linux, on existing pids,
 * every thread of each): pinned, the target measured alone on one core and everything else — mock,
 * load generator, Redis, the database's backends, the targets not being measured — on another,
 * Redis and the mock at real-time priority (SCHED_FIFO) so they answer at once, as on machines of
 * their own, and the rest at nice -20 so that other work on a shared machine barely competes;
 * unpinned, every process on every core at normal priority.
 */

export interface Cores {
  /** The measured target's core. */
  target: number;
  /** Everyone else's core. */
  others: number;
  /** The cores this bench may use (its own affinity at start), e.g. `0-1`. */
  all: string;
}

/** Cores to pin on, or why not: fewer than 2 usable cores, or taskset/chrt missing or not permitted. */
export function pinningCores(): Cores | { reason: string } {
  const all = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
  const cores = expand(all);
  if (cores.length < 2) return { reason: `only ${cores.length} usable core(s) (${all})` };
  for (const tool of ['taskset', 'chrt', 'renice']) {
    if (spawnSync(tool, ['--version']).error) {
      return { reason: `${tool} not found (util-linux; apt-get install util-linux)` };
    }
  }
  // Real-time priority needs CAP_SYS_NICE (or an rtprio limit): try it on a throwaway process.
  if (spawnSync('chrt', ['-f', '1', 'true']).status !== 0) {
    return { reason: 'chrt -f is not permitted here (needs CAP_SYS_NICE)' };
  }
  // The last core for the target: core 0 usually takes the most interrupts.
  return { target: cores[cores.length - 1] as number, others: cores[0] as number, all };
}

/** `0-2,5` → [0, 1, 2, 5]. */
function expand(list: string): number[] {
  const cores: number[] = [];
  for (const part of list.split(',')) {
    const [from, to] = part.split('-').map(Number);
    if (from === undefined || Number.isNaN(from)) continue;
    for (let core = from; core <= (to ?? from); core += 1) cores.push(core);
  }
  return cores;
}

/** Puts every thread of `pid` on `cpus` (`2`, `0-1`); one that exited meanwhile is skipped. */
export function setAffinity(pid: number, cpus: string): void {
  run('taskset', ['-a', '-p', '-c', cpus, String(pid)]);
}

/**
 * SCHED_FIFO priority 50 for every thread of `pid`, or back to the normal policy. Only for a
 * process whose threads never wait on each other while runnable: Node's GC helper threads at
 * SCHED_FIFO spun against each other on one core (FIFO never time-slices between equal
 * priorities) and froze the process — the mock runs with `--single-threaded` for this.
 */
export function setRealtime(pid: number, realtime: boolean): void {
  run('chrt', realtime ? ['-f', '-a', '-p', '50', String(pid)] : ['-o', '-a', '-p', '0', String(pid)]);
}

/**
 * The nice value of every thread of `pid` (-20: the scheduler gives it ~99 % of a core against a
 * process at 0 — other work on a shared machine — without real-time's risks); new threads inherit it.
 */
export function setNice(pid: number, nice: number): void {
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return; // exited
  }
  run('renice', ['-n', String(nice), '-p', ...tids]);
}

function run(tool: string, args: string[]): void {
  try {
    execFileSync(tool, args, { stdio: 'ignore' });
  } catch {
    // the process is gone: nothing to place
  }
}

/**
 * The pids of the PostgreSQL backends serving `databaseUrl`'s database (the server's other
 * databases, other benches' and tests', are left alone), read through a connection of its own
 * to the server's `postgres` database, whose own backend is not counted.
 */
export async function backendPids(databaseUrl: string): Promise<number[]> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  url.pathname = '/postgres';
  const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<{ pid: number }[]>`select pid from pg_stat_activity where datname = ${name}`;
    return rows.map((row) => row.pid);
  } finally {
    await sql.end();
  }
}

/** Is this a running process's pid (for a backend that may have exited since)? */
export function alive(pid: number): boolean {
  try {
    readFileSync(`/proc/${pid}/stat`);
    return true;
  } catch {
    return false;
  }
}
