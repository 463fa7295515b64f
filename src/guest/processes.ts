import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { resolveUserPath } from './access.ts';
import type { PtyServer } from './pty-client.ts';
import { PTY_HELPER } from './pty-helper.ts';
import type { GuestUser } from './users.ts';

export interface ProcessConfigLike {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string | undefined;
}

export interface StartProcessOpts {
  config: ProcessConfigLike;
  user: GuestUser;
  pty?: { cols: number; rows: number } | undefined;
  tag?: string | undefined;
  /** Open a stdin pipe (ignored for a PTY, whose input is the terminal). */
  stdin: boolean;
  /** Kill the process after this many ms (0 = never): E2B's Connect-Timeout-Ms on Start. */
  timeoutMs: number;
  /** Default environment from /init, below the request's own envs. */
  baseEnv: Record<string, string>;
  workdir?: string | undefined;
}

export type OutputStream = 'stdout' | 'stderr' | 'pty';
export interface EndInfo {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string;
}
export type ProcEvent = { type: 'data'; stream: OutputStream; data: Buffer } | { type: 'end'; end: EndInfo };

/** Failures the service maps to Connect codes. */
export class ProcessError extends Error {
  readonly kind: 'invalid_argument' | 'not_found' | 'failed_precondition' | 'internal';
  constructor(kind: ProcessError['kind'], message: string) {
    super(message);
    this.kind = kind;
  }
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long an exited process stays visible to Connect (so a late client still gets its end). */
const RETAIN_MS = 30_000;
/** Largest data event, as envd sends them. */
const CHUNK = 32 * 1024;

// Go's os.ProcessState wording, which E2B clients see in EndEvent.status/error.
const SIGNAL_TEXT: Record<string, string> = {
  SIGKILL: 'killed',
  SIGTERM: 'terminated',
  SIGINT: 'interrupt',
  SIGHUP: 'hangup',
  SIGQUIT: 'quit',
  SIGPIPE: 'broken pipe',
  SIGABRT: 'aborted',
  SIGSEGV: 'segmentation fault',
  SIGUSR1: 'user defined signal 1',
  SIGUSR2: 'user defined signal 2',
  SIGALRM: 'alarm clock',
};

export function endInfo(code: number | null, signal: NodeJS.Signals | null): EndInfo {
  if (code !== null) {
    const status = `exit status ${code}`;
    return code === 0
      ? { exitCode: 0, exited: true, status }
      : { exitCode: code, exited: true, status, error: status };
  }
  const text = `signal: ${SIGNAL_TEXT[signal ?? ''] ?? signal ?? 'unknown'}`;
  return { exitCode: -1, exited: false, status: text, error: text };
}

/**
 * What ManagedProcess drives: a ChildProcess, or a session of the PTY server (pty-client.ts),
 * which reports the command's pid and emits `exit` exactly as a ChildProcess does.
 */
export interface ChildLike {
  readonly pid?: number | undefined;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly stdio: readonly unknown[];
  /** A PTY server session resizes its terminal itself; the one-shot helper reads fd 3. */
  resize?: (cols: number, rows: number) => void;
  kill(signal?: NodeJS.Signals): boolean;
  on(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
}

/** One process started through the agent; emits `event` (data, then exactly one end). */
export class ManagedProcess extends EventEmitter<{ event: [ProcEvent] }> {
  readonly pid: number;
  readonly tag: string | undefined;
  readonly config: ProcessConfigLike;
  readonly isPty: boolean;
  end: EndInfo | undefined;
  readonly #child: ChildLike;
  #stdin: Writable | null;
  readonly #ctl: Writable | null;
  #timer: NodeJS.Timeout | undefined;

  constructor(child: ChildLike, o: StartProcessOpts) {
    super();
    if (child.pid === undefined) throw new ProcessError('internal', `could not start ${o.config.cmd}`);
    this.pid = child.pid;
    this.tag = o.tag;
    this.config = o.config;
    this.isPty = o.pty !== undefined;
    this.#child = child;
    this.#stdin = child.stdin;
    this.#ctl =
      this.isPty && !child.resize ? ((child.stdio[3] as Writable | null | undefined) ?? null) : null;
    this.#stdin?.on('error', () => undefined);
    this.#ctl?.on('error', () => undefined);
    if (!o.stdin && !this.isPty) {
      this.#stdin?.end();
      this.#stdin = null;
    }
    const forward = (stream: OutputStream) => (d: Buffer) => {
      for (let i = 0; i < d.length; i += CHUNK)
        this.emit('event', { type: 'data', stream, data: d.subarray(i, i + CHUNK) });
    };
    let open = 0;
    const outs: [NodeJS.ReadableStream | null, OutputStream][] = this.isPty
      ? [[child.stdout, 'pty']]
      : [
          [child.stdout, 'stdout'],
          [child.stderr, 'stderr'],
        ];
    let drained: () => void = () => undefined;
    const allDrained = new Promise<void>((r) => (drained = r));
    for (const [s, name] of outs) {
      if (!s) continue;
      open++;
      s.on('data', forward(name));
      s.on('end', () => {
        if (--open === 0) drained();
      });
    }
    if (open === 0) drained();
    if (this.isPty) child.stderr?.resume();
    child.on('exit', (code, signal) => {
      clearTimeout(this.#timer);
      // Output still in the pipes arrives shortly; a background grandchild holding the pipe
      // open must not hold the end event back (envd does the same).
      const grace = new Promise((r) => setTimeout(r, 100));
      void Promise.race([allDrained, grace]).then(() => {
        this.end = endInfo(code, signal);
        this.emit('event', { type: 'end', end: this.end });
        this.#ctl?.end();
      });
    });
    if (o.timeoutMs > 0) {
      this.#timer = setTimeout(() => {
        this.signal('SIGKILL');
      }, o.timeoutMs);
      this.#timer.unref();
    }
  }

  /**
   * Writes to the process's stdin; resolves once the pipe takes more (backpressure: a client
   * streaming input faster than the command reads it waits, rather than the agent buffering it
   * all), or at once when the pipe is gone (the command ended or closed its stdin).
   */
  async writeStdin(data: Uint8Array): Promise<void> {
    if (this.end) throw new ProcessError('not_found', `process with pid ${this.pid} has exited`);
    if (this.isPty)
      throw new ProcessError(
        'internal',
        'stdin not enabled or closed: this is a PTY process, send pty input',
      );
    const w = this.#stdin;
    if (!w || w.writableEnded) throw new ProcessError('internal', 'stdin not enabled or closed');
    if (w.write(data) || w.destroyed) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        w.off('drain', done).off('close', done).off('error', done);
        resolve();
      };
      w.on('drain', done).on('close', done).on('error', done);
    });
  }

  writePty(data: Uint8Array): void {
    if (this.end) throw new ProcessError('not_found', `process with pid ${this.pid} has exited`);
    if (!this.isPty || !this.#stdin)
      throw new ProcessError('internal', 'not a PTY process: send stdin input');
    this.#stdin.write(data);
  }

  closeStdin(): void {
    if (this.isPty)
      throw new ProcessError(
        'failed_precondition',
        'cannot close stdin of a PTY process; send 0x04 (Ctrl-D)',
      );
    this.#stdin?.end();
  }

  resize(cols: number, rows: number): void {
    if (this.isPty && this.#child.resize) this.#child.resize(cols, rows);
    else if (this.isPty && this.#ctl) this.#ctl.write(`resize ${cols} ${rows}\n`);
    else throw new ProcessError('internal', 'not a PTY process: nothing to resize');
  }

  /** Signals the whole process group (the command and what it started). */
  signal(sig: 'SIGKILL' | 'SIGTERM'): void {
    try {
      process.kill(-this.pid, sig);
    } catch {
      try {
        this.#child.kill(sig);
      } catch {
        // already gone
      }
    }
  }
}

/**
 * The command line as the request's user: setpriv (util-linux, in every Debian) switches user;
 * unlike a bare setuid it also sets the supplementary groups, and it execs, so the pid we report
 * is the command's own.
 */
function asUser(o: StartProcessOpts): [string, ...string[]] {
  const cmd: [string, ...string[]] = [o.config.cmd, ...o.config.args];
  if (process.getuid?.() === o.user.uid) return cmd;
  return ['setpriv', `--reuid=${o.user.uid}`, `--regid=${o.user.gid}`, '--init-groups', '--', ...cmd];
}

/** Spawns `argv` in its own process group; resolves once it runs. */
async function spawnStarted(
  [bin, ...args]: [string, ...string[]],
  opts: Pick<SpawnOptions, 'cwd' | 'env' | 'stdio'>,
  o: StartProcessOpts,
): Promise<ChildProcess> {
  const child = spawn(bin, args, { ...opts, detached: true });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => {
      reject(new ProcessError('invalid_argument', `cannot start ${o.config.cmd}: ${e.message}`));
    });
  });
  return child;
}

/** Starts, finds and lists the agent's processes. */
export class ProcessManager {
  readonly #procs = new Map<number, ManagedProcess>();
  readonly #ptys: PtyServer | undefined;

  /** `ptys`: the PTY server; without it every PTY runs under the one-shot helper. */
  constructor(ptys?: PtyServer) {
    this.#ptys = ptys;
  }

  async start(o: StartProcessOpts): Promise<ManagedProcess> {
    let cwd: string;
    try {
      cwd = resolveUserPath(o.config.cwd ?? '', o.user, o.workdir);
    } catch (e) {
      throw new ProcessError('invalid_argument', (e as Error).message);
    }
    // Sync: one syscall, where the async form costs thread-pool round trips (slow under TCG).
    const st = statSync(cwd, { throwIfNoEntry: false });
    if (!st?.isDirectory()) throw new ProcessError('invalid_argument', `cwd '${cwd}' does not exist`);
    if (o.tag !== undefined && this.byTag(o.tag))
      throw new ProcessError('invalid_argument', `a process with tag '${o.tag}' is running`);
    const env: Record<string, string> = {
      PATH: DEFAULT_PATH,
      HOME: o.user.home,
      USER: o.user.name,
      LOGNAME: o.user.name,
      ...o.baseEnv,
      ...o.config.envs,
    };
    const child = o.pty
      ? await this.#startPty(o, o.pty, cwd, env)
      : await spawnStarted(asUser(o), { cwd, env, stdio: [o.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] }, o);
    const p = new ManagedProcess(child, o);
    this.#procs.set(p.pid, p);
    p.on('event', (e) => {
      if (e.type === 'end') setTimeout(() => this.#procs.delete(p.pid), RETAIN_MS).unref();
    });
    return p;
  }

  /**
   * A PTY: a session of the persistent PTY server (pty-server.ts; it switches user itself, as
   * setpriv would), or, when the server cannot serve it, the one-shot helper.
   */
  async #startPty(
    o: StartProcessOpts,
    size: { cols: number; rows: number },
    cwd: string,
    env: Record<string, string>,
  ): Promise<ChildLike> {
    env['TERM'] ??= 'xterm-256color';
    const session = await this.#ptys?.open({
      ...size,
      uid: o.user.uid,
      gid: o.user.gid,
      user: o.user.name,
      cwd,
      env,
      argv: [o.config.cmd, ...o.config.args],
    });
    if (session) return session;
    // -I -S: no site module, no user site or PYTHON* variables: half the helper's start under
    // TCG (bench/pty), and the command's environment cannot change how the helper runs.
    const py = ['-u', '-I', '-S', '-c', PTY_HELPER, String(size.cols), String(size.rows)];
    return spawnStarted(
      ['python3', ...py, ...asUser(o)],
      { cwd, env, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] },
      o,
    );
  }

  get(pid: number): ManagedProcess | undefined {
    return this.#procs.get(pid);
  }

  byTag(tag: string): ManagedProcess | undefined {
    for (const p of this.#procs.values()) if (p.tag === tag && !p.end) return p;
    return undefined;
  }

  /** Processes still running. */
  list(): ManagedProcess[] {
    return [...this.#procs.values()].filter((p) => !p.end);
  }

  /** Kills everything (agent shutdown, tests). */
  killAll(): void {
    for (const p of this.list()) p.signal('SIGKILL');
  }
}

export const SIGNALS = osConstants.signals;
