#!/usr/bin/env node
// The `spicegate` command. The sources are TypeScript: bin/bundle.js builds them with esbuild at
// start (~0.2 s), so there is no build step between `npm install` and `npm start`, and nothing
// transforms code at runtime. Stack traces name the bundle in .build/ (function names as in src/);
// NODE_OPTIONS=--enable-source-maps maps them to src/ (off by default: it costs ~15 MiB of RSS).
import { bundle } from './bundle.js';

await import(await bundle('src/entry/cli.ts'));
