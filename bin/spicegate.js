#!/usr/bin/env node
// The `spicegate` command. Sources are TypeScript, loaded through tsx's ESM hook, so there is no
// build step between `npm install` and `npm start`.
import { register } from 'tsx/esm/api';

register();
await import('../src/entry/cli.ts');
