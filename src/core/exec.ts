import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
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

/** Collects a child's output: all of stdout, the last 64 KiB of stderr, and whole lines for `onLine`. */
class OutputCollector {
  stdout = '';
  stderr = '';
  #partial = '';
  readonly #onLine: ((line: string) => void) | undefined;
  constructor(onLine: ((line: string) => void) | undefined) {
    this.#onLine = onLine;
  }

  out(chunk: string): void {
    this.stdout += chunk;
    this.#feed(chunk);
  }

  err(chunk: string): void {
    this.stderr = (this.stderr + chunk).slice(-64 * 1024);
    this.#feed(chunk);
  }

  #feed(chunk: string): void {
    if (!this.#onLine) return;
    this.#partial += chunk;
    const lines = this.#partial.split('\n');
    this.#partial = lines.pop() ?? '';
    for (const l of lines) if (l.trim()) this.#onLine(l);
  }
}

/** Signals a child's whole process group (it may be gone already). */
function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, sig);
  } catch {
    // already gone
  }
}

/** The error for a program that could not be started. */
function spawnError(cmd: string, err: NodeJS.ErrnoException, failCode: ErrorCode | undefined): KilnError {
  if (err.code === 'ENOENT') {
    return new KilnError(
      'missing_tool',
      `${cmd} is not installed (run ./kiln once as root to install kiln's Debian packages)`,
      { cause: err, details: { tool: cmd } },
    );
  }
  return new KilnError(failCode ?? 'internal', `${cmd}: ${err.message}`, { cause: err });
}

/** The error for a program that ended with a non-zero status or a signal. */
function exitError(
  cmd: string,
  args: readonly string[],
  ended: { code: number | null; sig: NodeJS.Signals | null },
  out: OutputCollector,
  failCode: ErrorCode | undefined,
): KilnError {
  const tail = out.stderr.trim().slice(-TAIL) || out.stdout.trim().slice(-TAIL);
  const how = ended.code === null ? `killed by ${ended.sig ?? 'a signal'}` : `exit code ${ended.code}`;
  const errCode: ErrorCode = /No space left on device/i.test(out.stderr)
    ? 'no_space'
    : (failCode ?? 'internal');
  const advice = errCode === 'no_space' ? ` — ${NO_SPACE_ADVICE}` : '';
  return new KilnError(errCode, `${cmd} ${args.slice(0, 3).join(' ')} failed (${how}): ${tail}${advice}`, {
    details: { cmd, exitCode: ended.code },
  });
}

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
    const out = new OutputCollector(opts.onLine);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out.out(d);
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      out.err(d);
    });
    const onAbort = (): void => {
      killGroup(child, 'SIGTERM');
      setTimeout(() => {
        killGroup(child, 'SIGKILL');
      }, 3000).unref();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
    child.on('error', (err: NodeJS.ErrnoException) => {
      opts.signal?.removeEventListener('abort', onAbort);
      reject(spawnError(cmd, err, opts.failCode));
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (opts.signal?.aborted) reject(new KilnError('cancelled', `${cmd}: cancelled`));
      else if (code === 0) resolve({ stdout: out.stdout, stderr: out.stderr });
      else reject(exitError(cmd, args, { code, sig }, out, opts.failCode));
    });
  });
}
