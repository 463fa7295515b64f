/**
 * The agent's side of the PTY server (pty-server.ts holds the protocol and the server's source):
 * the server's lifecycle, and a session adapter shaped like the ChildProcess that ManagedProcess
 * (processes.ts) drives. When the server cannot serve a session, `open` answers undefined and
 * the caller runs the one-shot helper instead; the server is then restarted in the background.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { FRAME, FrameReader, PTY_SERVER, encodeFrame, type PtyRequest } from './pty-server.ts';

export type { PtyRequest };

/** Input is sent in frames of at most this many bytes. */
const INPUT_FRAME = 64 * 1024;

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

const clampSize = (n: number): number => Math.max(0, Math.min(65535, Math.trunc(n) || 0));

/**
 * One PTY session of the server, as ManagedProcess uses a ChildProcess: `pid` (the command's),
 * `stdin` (terminal input), `stdout` (terminal output; ends when the session does), no stderr,
 * `resize`, `kill`, and one `'exit'(code, signal)`: a command killed by a signal reports code
 * null and the signal's name. A connection lost without an exit reports SIGHUP (what closing
 * its terminal sends the command).
 */
export class PtySession extends EventEmitter<{ exit: [number | null, NodeJS.Signals | null] }> {
  readonly pid: number;
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr = null;
  readonly stdio: readonly [Writable, Readable, null];
  readonly #sock: Socket;
  #exited = false;

  /** Takes over `sock` once its `pid` frame has been read; `reader` holds what followed it. */
  constructor(sock: Socket, pid: number, reader: FrameReader) {
    super();
    this.pid = pid;
    this.#sock = sock;
    this.stdout = new Readable({ read: () => undefined });
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (sock.destroyed || this.#exited) {
          cb();
          return;
        }
        for (let i = 0; i < chunk.length; i += INPUT_FRAME)
          sock.write(encodeFrame(FRAME.input, chunk.subarray(i, i + INPUT_FRAME)));
        if (!sock.writableNeedDrain) {
          cb();
          return;
        }
        // Backpressure: the next write waits until the socket takes more (or is gone).
        const done = (): void => {
          sock.off('drain', done).off('close', done);
          cb();
        };
        sock.on('drain', done).on('close', done);
      },
    });
    this.stdio = [this.stdin, this.stdout, null];
    const drainFrames = (): void => {
      for (let f = reader.next(); f; f = reader.next()) this.#onFrame(f.type, f.payload);
    };
    // Frames that came with the pid now (output is buffered in `stdout`, `exit` is emitted on
    // the next turn, after the caller has attached its listeners), then the rest as it comes.
    drainFrames();
    sock.on('data', (d: Buffer) => {
      reader.push(d);
      drainFrames();
    });
    sock.on('close', () => {
      this.#end(null, 'SIGHUP');
    });
  }

  /** Sets the terminal's window size (the command gets SIGWINCH). */
  resize(cols: number, rows: number): void {
    if (this.#exited || this.#sock.destroyed) return;
    const p = Buffer.alloc(4);
    p.writeUInt16BE(clampSize(cols), 0);
    p.writeUInt16BE(clampSize(rows), 2);
    this.#sock.write(encodeFrame(FRAME.resize, p));
  }

  /** Signals the command (not its group: ManagedProcess signals the group itself). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  #onFrame(type: number, payload: Buffer): void {
    if (type === FRAME.output) this.stdout.push(payload);
    else if (type === FRAME.exit && payload.length === 5) {
      const value = payload.readInt32BE(1);
      if (payload.readUInt8(0) === 1) this.#end(null, SIGNAL_NAMES.get(value) ?? 'SIGKILL');
      else this.#end(value, null);
    }
  }

  #end(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#exited) return;
    this.#exited = true;
    this.stdout.push(null);
    this.#sock.end();
    setImmediate(() => this.emit('exit', code, signal));
  }
}

/** The agent's root-only directory for its sockets (the PTY server's, the warm-up's). */
export const AGENT_RUN_DIR = '/run/kiln-agent';

export interface PtyServerOpts {
  /** A directory only root may enter, made if missing (mode 0700); the server's socket goes in a fresh directory below it. */
  dir?: string;
  log?: (line: string) => void;
}

/** The persistent PTY server: started once, restarted on the next use after it died. */
export class PtyServer {
  readonly #base: string;
  readonly #log: (line: string) => void;
  #proc: ChildProcessByStdio<Writable, Readable, null> | undefined;
  #socket: string | undefined;
  #live = false;
  #starting: Promise<void> | undefined;
  #stopped = false;

  constructor(o: PtyServerOpts = {}) {
    this.#base = o.dir ?? AGENT_RUN_DIR;
    this.#log = o.log ?? (() => undefined);
  }

  /** The server's pid while it runs (tests). */
  get pid(): number | undefined {
    return this.#live ? this.#proc?.pid : undefined;
  }

  /** The socket sessions connect to, while the server runs. */
  get socketPath(): string | undefined {
    return this.#live ? this.#socket : undefined;
  }

  /**
   * Starts the server (at agent start-up, and again after it died). Resolves once it listens
   * (or failed, or after `timeoutMs`): a snapshot taken after that has it running and warm.
   */
  start(timeoutMs = 20_000): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#starting ??= this.#spawn(timeoutMs).finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  /** Resolves when a start under way has ended (at once when none is). */
  async whenStarted(): Promise<void> {
    await this.#starting;
  }

  /**
   * Opens a session; undefined when the server cannot serve it (not running, connection failed,
   * no pid within `timeoutMs`, or an error frame): the caller then starts the one-shot helper.
   */
  async open(req: PtyRequest, timeoutMs = 10_000): Promise<PtySession | undefined> {
    const path = this.socketPath;
    if (!path) {
      void this.start();
      return undefined;
    }
    const r = await connect(
      path,
      { ...req, cols: clampSize(req.cols), rows: clampSize(req.rows) },
      timeoutMs,
    );
    if (r instanceof PtySession) return r;
    this.#log(`pty server: ${r.error}; using the one-shot helper`);
    // A refusal comes from a working server; anything else means it is not: start a new one.
    if (!r.refused) {
      this.#kill();
      void this.start();
    }
    return undefined;
  }

  /** Stops the server (agent shutdown); sessions already open go on until they end. */
  stop(): void {
    this.#stopped = true;
    this.#kill();
  }

  #kill(): void {
    const p = this.#proc;
    this.#proc = undefined;
    this.#live = false;
    p?.kill('SIGKILL');
    if (this.#socket) rmSync(join(this.#socket, '..'), { recursive: true, force: true });
    this.#socket = undefined;
  }

  async #spawn(timeoutMs: number): Promise<void> {
    this.#kill();
    let dir: string;
    try {
      mkdirSync(this.#base, { recursive: true, mode: 0o700 });
      const st = lstatSync(this.#base);
      if (!st.isDirectory() || st.uid !== process.getuid?.())
        throw new Error(`${this.#base} is not a directory of the agent's user`);
      chmodSync(this.#base, 0o700);
      dir = mkdtempSync(join(this.#base, 'pty-'));
    } catch (e) {
      this.#log(`pty server: ${(e as Error).message}`);
      return;
    }
    const socket = join(dir, 'sock');
    // -I -S: no site module, no user site or PYTHON* variables (faster, and nothing in the
    // environment changes how the server runs).
    const p = spawn('python3', ['-u', '-I', '-S', '-c', PTY_SERVER, socket], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    this.#proc = p;
    this.#socket = socket;
    p.stdin.on('error', () => undefined);
    const gone = (): void => {
      if (this.#proc !== p) return;
      this.#proc = undefined;
      this.#live = false;
      this.#socket = undefined;
      rmSync(dir, { recursive: true, force: true });
    };
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      p.on('error', (e) => {
        this.#log(`pty server: ${e.message}`);
        gone();
        done();
      });
      p.on('exit', (code, signal) => {
        if (this.#proc === p) this.#log(`pty server exited (${signal ?? `code ${String(code)}`})`);
        gone();
        done();
      });
      p.stdout.once('data', (d: Buffer) => {
        if (this.#proc === p && d.toString().startsWith('ready')) this.#live = true;
        done();
      });
    });
    // The agent never waits on it to exit.
    p.unref();
    for (const s of [p.stdin, p.stdout] as unknown as Socket[]) s.unref();
  }
}

type ConnectResult = PtySession | { error: string; refused: boolean };

/** Sends the request; the session once its pid arrives. */
function connect(path: string, req: PtyRequest, timeoutMs: number): Promise<ConnectResult> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    const reader = new FrameReader();
    let settled = false;
    const fail = (error: string, refused = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('data').removeAllListeners('close');
      sock.destroy();
      resolve({ error, refused });
    };
    const timer = setTimeout(() => {
      fail(`no pid within ${timeoutMs} ms`);
    }, timeoutMs);
    sock.on('error', (e) => {
      fail(e.message);
    });
    sock.on('close', () => {
      fail('the connection closed before a pid');
    });
    sock.on('data', (d: Buffer) => {
      reader.push(d);
      const f = reader.next();
      if (!f) return;
      if (settled) return;
      if (f.type === FRAME.pid && f.payload.length === 4) {
        settled = true;
        clearTimeout(timer);
        sock.removeAllListeners('data').removeAllListeners('close').removeAllListeners('error');
        sock.on('error', () => undefined);
        resolve(new PtySession(sock, f.payload.readUInt32BE(0), reader));
      } else if (f.type === FRAME.error) fail(`refused: ${f.payload.toString()}`, true);
      else fail(`unexpected frame ${f.type}`);
    });
    sock.write(JSON.stringify(req) + '\n');
  });
}
