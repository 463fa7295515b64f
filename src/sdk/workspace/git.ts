/** Runs host git for the workspace commands: output as a Buffer, a failure as a KilnError. */
import { spawn } from 'node:child_process';
import { KilnError, type ErrorCode } from '../../core/errors.ts';

export interface GitResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** `git ARGS` in `cwd`; resolves with the exit code (never rejects on a non-zero exit). */
export function gitRaw(cwd: string, args: string[], input?: Buffer | string): Promise<GitResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err = (err + c).slice(-64 * 1024)));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? new KilnError('missing_tool', 'git is not installed on this host; install git', { cause: e })
          : e,
      );
    });
    child.on('close', (code) => {
      resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** `git ARGS` that must succeed: its stdout as text (trailing newline removed). */
export async function git(
  cwd: string,
  args: string[],
  o: { code?: ErrorCode; what?: string; input?: Buffer | string } = {},
): Promise<string> {
  const r = await gitRaw(cwd, args, o.input);
  if (r.code !== 0)
    throw new KilnError(
      o.code ?? 'internal',
      `${o.what ?? `git ${args.join(' ')}`} failed in ${cwd}: ${r.stderr.trim() || `exit ${r.code}`}`,
    );
  return r.stdout.toString('utf8').replace(/\n$/, '');
}

/** Splits git's `-z` output into its entries. */
export const nulSplit = (b: Buffer | string): string[] =>
  b
    .toString('utf8')
    .split('\0')
    .filter((x) => x !== '');
