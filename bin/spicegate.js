#!/usr/bin/env node
// The `spicegate` command. The sources are TypeScript: bin/bundle.js builds them with esbuild at
// start (~0.2 s; reused while the sources are unchanged), so there is no build step between
// `npm install` and `npm start`, and nothing transforms code at runtime. Stack traces name the
// bundle in .build/ (function names as in src/); NODE_OPTIONS=--enable-source-maps maps them to
// src/ (off by default: it costs ~15 MiB of RSS).
import { spawn } from 'node:child_process';
import { cpusHere, SINGLE_THREADED_GC, singleThreadedGc } from './gc-threads.js';

if (process.argv[2] === 'serve' && !process.execArgv.includes(SINGLE_THREADED_GC) && wantsSingleThreadedGc()) {
  relaunch([...process.execArgv, SINGLE_THREADED_GC, ...process.argv.slice(1)]);
} else {
  if (process.env.SPICEGATE_RELAUNCHED === '1' && process.channel !== undefined) {
    // Started by the command below: when it goes (even killed outright), shut down as on SIGTERM.
    process.channel.unref();
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  }
  // Start-up phases, logged with 'spicegate ready' (src/observability/startup.ts).
  const { bundle } = await import('./bundle.js');
  const bundling = performance.now();
  performance.measure('spicegate:node', { start: 0, end: bundling });
  const entry = await bundle('src/entry/cli.ts');
  performance.measure('spicegate:bundle', { start: bundling });
  await import(entry);
}

/** GC_THREADS (bin/gc-threads.js); a bad value ends here like any bad setting (exit 2, one line). */
function wantsSingleThreadedGc() {
  try {
    return singleThreadedGc(process.env.GC_THREADS, cpusHere());
  } catch (error) {
    process.stderr.write(`spicegate: invalid configuration: ${error.message}\n`);
    process.exit(2);
  }
}

/**
 * Runs the server again with the flags it needs, passing signals on and ending as it ends. Its
 * 'spicegate ready' line gives its pid.
 */
function relaunch(args) {
  const server = spawn(process.execPath, args, {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, SPICEGATE_RELAUNCHED: '1' },
  });
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => server.kill(signal));
  server.on('exit', (code, signal) => {
    if (signal === null) process.exit(code ?? 1);
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  });
}
