import { type Config, type Env, parseConfig } from '../config.js';

/** Parses the environment or stops the process: one line naming the variable, exit code 2. */
export function loadConfigOrExit(env: Env): Config {
  const result = parseConfig(env);
  if (!result.ok) {
    process.stderr.write(`spicegate: invalid configuration: ${result.message}\n`);
    process.exit(2);
  }
  return result.config;
}
