import { connect, type Socket } from 'node:net';
import { EventEmitter } from 'node:events';
import { KilnError } from '../../core/errors.ts';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpOpts {
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

/**
 * A client for QEMU's machine protocol (QMP): JSON objects, one per line, over a unix socket.
 * `connect` reads the greeting and negotiates capabilities; `execute` tags each command with an
 * id and matches the reply; asynchronous events are emitted as `event`. A closed socket rejects
 * every pending command with `driver_error`.
 */
export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  readonly #sock: Socket;
  readonly #pending = new Map<string, Pending>();
  #buf = '';
  #nextId = 1;
  #closed = false;
  #greeting: (() => void) | undefined;

  private constructor(sock: Socket) {
    super();
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.#onData(d);
    });
    sock.on('close', () => {
      this.#onClose();
    });
    sock.on('error', () => undefined); // 'close' follows and rejects what is pending
  }

  /** Connects to a QMP socket, waits for the greeting, sends `qmp_capabilities`. */
  static async connect(path: string, opts: QmpOpts = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = connect(path);
    const client = new QmpClient(sock);
    const greeting = new Promise<void>((resolve, reject) => {
      const fail = (e: KilnError): void => {
        clearTimeout(timer);
        reject(e);
      };
      const timer = setTimeout(() => {
        fail(new KilnError('timeout', `QMP ${path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      client.#greeting = () => {
        clearTimeout(timer);
        resolve();
      };
      sock.once('error', (e) => {
        fail(new KilnError('driver_error', `QMP ${path}: ${e.message}`, { cause: e }));
      });
      client.once('close', () => {
        fail(new KilnError('driver_error', `QMP ${path}: closed before the greeting`));
      });
      opts.signal?.addEventListener('abort', () => {
        fail(new KilnError('cancelled', `QMP ${path}: cancelled`));
      });
    });
    try {
      await greeting;
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** Runs one QMP command and returns its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: QmpOpts = {}): Promise<T> {
    if (this.#closed)
      return Promise.reject(new KilnError('driver_error', `QMP ${command}: connection closed`));
    const id = `k${this.#nextId++}`;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new KilnError('timeout', `QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      const msg = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.#sock.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Resolves with the first event of this name (optionally matching `pred`) or rejects on timeout. */
  waitEvent(name: string, opts: QmpOpts & { pred?: (e: QmpEvent) => boolean } = {}): Promise<QmpEvent> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent): void => {
        if (e.event !== name || (opts.pred && !opts.pred(e))) return;
        cleanup();
        resolve(e);
      };
      const onClose = (): void => {
        cleanup();
        reject(new KilnError('driver_error', `QMP closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new KilnError('timeout', `QMP: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#sock.destroy();
  }

  #onData(d: string): void {
    this.#buf += d;
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line) this.#onMessage(line);
    }
  }

  #onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // QEMU only sends JSON; ignore garbage rather than crash the daemon
    }
    if ('QMP' in msg) {
      this.#greeting?.();
      this.#greeting = undefined;
      return;
    }
    if ('event' in msg) {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg['id'] === 'string' ? msg['id'] : undefined;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p || id === undefined) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const err = msg['error'] as { class?: string; desc?: string };
      p.reject(
        new KilnError('driver_error', `QMP ${p.command}: ${err.desc ?? 'error'} (${err.class ?? '?'})`, {
          details: { qmpClass: err.class },
        }),
      );
    } else {
      p.resolve(msg['return']);
    }
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new KilnError('driver_error', `QMP ${p.command}: connection closed (QEMU exited?)`));
      this.#pending.delete(id);
    }
    this.emit('close');
  }
}
