// `node --import` this file: every module the process loads (its URL) is appended to the file
// MODULE_LOG names, one a line, so a test sees which packages a start really loaded.
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

/** A module loader hook (it runs on Node's hooks thread): records, then loads as usual. */
export async function load(url, context, nextLoad) {
  appendFileSync(process.env.MODULE_LOG, `${url}\n`);
  return nextLoad(url, context);
}

if (isMainThread) register(import.meta.url);
