import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `spicegate …` (the real bin, a Node process of its own) against a served gateway at `url`, with
 * `token` as its bearer; never the environment's ADMIN_TOKEN. A non-zero exit is a result, not a throw.
 */
export async function spicegateCli(url: string, token: string, args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['bin/spicegate.js', ...args, '--url', url, '--token', token],
      {
        env: { ...process.env, ADMIN_TOKEN: '', NODE_ENV: 'production' },
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as CliResult;
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}
