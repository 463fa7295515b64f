import { spawn, type SpawnOptions } from 'node:child_process';
import { KilnError, NO_SPACE_ADVICE, type ErrorCode } from './errors.ts';

export interface RunOpts {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /** Called with each line the program prints (stdout and stderr), for progress detail. */
  onLine?: (line: string) => void;
  /** The error code to raise when the program fails (exit != 0). */
  failCode?: ErrorCode;
  /** Text to feed on stdin. */
  input?: string | Buffer;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

const TAIL = 4000;

/**
 * Runs a program to completion and returns its output. A missing program raises `missing_tool`
 * (naming the program), an abort raises `cancelled` after the child has exited, "No space left"
 * raises `no_space`, any other failure raises `failCode` with the tail of stderr.
 */
export function run(cmd: string, args: readonly string[], opts: RunOpts = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new KilnError('cancelled', `${cmd}: cancelled before start`));
      return;
    }
    // Own process group, so an abort stops the program and everything it started (debootstrap
    // runs dpkg in a chroot, for example), not just the direct child.
    const so: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env, // undefined: this process's environment
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    };
    const child = spawn(cmd, args, so);
    let stdout = '';
    let stderr = '';
    let partial = '';
    const feed = (chunk: string): void => {
      if (!opts.onLine) return;
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) opts.onLine(l);
    };
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      feed(d);
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-64 * 1024);
      feed(d);
    });
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    const onAbort = (): void => {
      killGroup('SIGTERM');
      setTimeout(() => {
        killGroup('SIGKILL');
      }, 3000).unref();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
    child.on('error', (err: NodeJS.ErrnoException) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (err.code === 'ENOENT') {
        reject(
          new KilnError(
            'missing_tool',
            `${cmd} is not installed (run ./kiln once as root to install kiln's Debian packages)`,
            { cause: err, details: { tool: cmd } },
          ),
        );
      } else {
        reject(new KilnError(opts.failCode ?? 'internal', `${cmd}: ${err.message}`, { cause: err }));
      }
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (opts.signal?.aborted) {
        reject(new KilnError('cancelled', `${cmd}: cancelled`));
        return;
      }
      if (code === 0) {
        resolve({ stdout, stderr });
        return;
      }
      const tail = stderr.trim().slice(-TAIL) || stdout.trim().slice(-TAIL);
      const how = code === null ? `killed by ${sig ?? 'a signal'}` : `exit code ${code}`;
      const errCode: ErrorCode = /No space left on device/i.test(stderr)
        ? 'no_space'
        : (opts.failCode ?? 'internal');
      const advice = errCode === 'no_space' ? ` — ${NO_SPACE_ADVICE}` : '';
      reject(
        new KilnError(errCode, `${cmd} ${args.slice(0, 3).join(' ')} failed (${how}): ${tail}${advice}`, {
          details: { cmd, exitCode: code },
        }),
      );
    });
  });
}
