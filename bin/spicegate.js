#!/usr/bin/env node
// The `spicegate` command. The sources are TypeScript: bin/bundle.js builds them with esbuild at
// start (~0.2 s; reused while the sources are unchanged), so there is no build step between
// `npm install` and `npm start`, and nothing transforms code at runtime. Stack traces name the
// bundle in .build/ (function names as in src/); NODE_OPTIONS=--enable-source-maps maps them to
// src/ (off by default: it costs ~15 MiB of RSS).
import { bundle } from './bundle.js';

// Start-up phases, logged with 'spicegate ready' (src/observability/startup.ts).
const bundling = performance.now();
performance.measure('spicegate:node', { start: 0, end: bundling });
const entry = await bundle('src/entry/cli.ts');
performance.measure('spicegate:bundle', { start: bundling });
await import(entry);
