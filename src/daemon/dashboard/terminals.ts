import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import type { Logger } from 'pino';
import { KilnError } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { validateInt } from '../../core/validate.ts';
import { Process, Signal } from '../../core/envd/process/process_pb.js';
import { DASHBOARD_GUEST_USER, type AgentOf } from './guest-files.ts';

/** Output kept per terminal for a (re)attaching viewer: the newest bytes, at most this many. */
export const TERMINAL_REPLAY_BYTES = 256 * 1024;
/** A terminal nobody has watched for this long is ended (its shell killed). */
export const TERMINAL_UNWATCHED_MS = 60_000;
/** At most this many terminals at once (all sandboxes). */
export const MAX_TERMINALS = 32;

export type TerminalEvent = { kind: 'data'; data: Uint8Array } | { kind: 'exit'; status: string };

/** One PTY shell in a guest, started through the agent's process service (as the SDK's pty.create). */
export interface Terminal {
  readonly id: string;
  readonly sandboxId: string;
  /** Who opened it (the dashboard's session): only they may use it. */
  readonly owner: string;
  /**
   * Subscribes to its output: first everything kept (up to TERMINAL_REPLAY_BYTES), then what
   * comes; the exit last. Returns the unsubscribe.
   */
  watch(fn: (e: TerminalEvent) => void): () => void;
  /** Bytes typed into it (Ctrl-C is \x03: the guest's line discipline makes it SIGINT). */
  write(data: Uint8Array): Promise<void>;
  resize(cols: number, rows: number): Promise<void>;
  close(): void;
}

const basic = (user: string): string => `Basic ${Buffer.from(`${user}:`).toString('base64')}`;

/** The size of a PTY: 1..1000 columns and rows. */
export function checkSize(cols: unknown, rows: unknown): { cols: number; rows: number } {
  return { cols: validateInt('cols', cols, 1, 1000), rows: validateInt('rows', rows, 1, 1000) };
}

class GuestTerminal implements Terminal {
  readonly id = newId('term');
  readonly sandboxId: string;
  readonly owner: string;
  readonly #ac = new AbortController();
  readonly #kept: Uint8Array[] = [];
  #keptBytes = 0;
  #exit: string | undefined;
  readonly #watchers = new Set<(e: TerminalEvent) => void>();
  #pid: number | undefined;
  #unwatchedSince = Date.now();
  readonly #client: Client<typeof Process>;
  readonly #headers: Record<string, string>;

  constructor(sandboxId: string, owner: string, baseUrl: string, token: string, user: string) {
    this.sandboxId = sandboxId;
    this.owner = owner;
    this.#client = createClient(
      Process,
      createConnectTransport({ baseUrl, httpVersion: '1.1', useBinaryFormat: true }),
    );
    this.#headers = { 'x-access-token': token, authorization: basic(user) };
  }

  /** Starts the shell; resolves once the agent says its pid. */
  async start(size: { cols: number; rows: number }, onEnd: () => void): Promise<void> {
    const stream = this.#client.start(
      {
        process: {
          cmd: '/bin/bash',
          args: ['-i', '-l'],
          envs: { TERM: 'xterm-256color', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
        },
        pty: { size },
      },
      {
        headers: { ...this.#headers, 'keepalive-ping-interval': '10' },
        timeoutMs: 0,
        signal: this.#ac.signal,
      },
    );
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    const ev = first.done ? undefined : first.value.event?.event;
    if (ev?.case !== 'start') {
      this.#ac.abort();
      throw new KilnError('guest_agent_error', 'the guest agent did not start the terminal shell');
    }
    this.#pid = ev.value.pid;
    void (async () => {
      try {
        for (let n = await it.next(); !n.done; n = await it.next()) {
          const e = n.value.event?.event;
          if (e?.case === 'data' && e.value.output.case === 'pty') this.#emit(e.value.output.value);
          else if (e?.case === 'end') this.#finish(e.value.status || `exit ${e.value.exitCode}`);
        }
        this.#finish('ended');
      } catch (e) {
        this.#finish(this.#ac.signal.aborted ? 'closed' : `lost: ${(e as Error).message}`);
      } finally {
        onEnd();
      }
    })();
  }

  #emit(data: Uint8Array): void {
    this.#kept.push(data);
    this.#keptBytes += data.length;
    while (this.#keptBytes > TERMINAL_REPLAY_BYTES && this.#kept.length > 1)
      this.#keptBytes -= this.#kept.shift()?.length ?? 0;
    for (const w of this.#watchers) w({ kind: 'data', data });
  }

  #finish(status: string): void {
    if (this.#exit !== undefined) return;
    this.#exit = status;
    for (const w of this.#watchers) w({ kind: 'exit', status });
  }

  get ended(): boolean {
    return this.#exit !== undefined;
  }

  /** True when nobody has watched it for `ms`. */
  unwatchedFor(ms: number, now: number): boolean {
    return this.#watchers.size === 0 && now - this.#unwatchedSince >= ms;
  }

  watch(fn: (e: TerminalEvent) => void): () => void {
    for (const d of this.#kept) fn({ kind: 'data', data: d });
    if (this.#exit !== undefined) fn({ kind: 'exit', status: this.#exit });
    this.#watchers.add(fn);
    return () => {
      this.#watchers.delete(fn);
      if (this.#watchers.size === 0) this.#unwatchedSince = Date.now();
    };
  }

  #selector(): { selector: { case: 'pid'; value: number } } {
    if (this.#pid === undefined || this.#exit !== undefined)
      throw new KilnError('invalid_state', `terminal ${this.id} has ended (${this.#exit ?? 'not started'})`);
    return { selector: { case: 'pid', value: this.#pid } };
  }

  async write(data: Uint8Array): Promise<void> {
    await this.#client.sendInput(
      { process: this.#selector(), input: { input: { case: 'pty', value: data } } },
      { headers: this.#headers, timeoutMs: 10_000 },
    );
  }

  async resize(cols: number, rows: number): Promise<void> {
    const size = checkSize(cols, rows);
    await this.#client.update(
      { process: this.#selector(), pty: { size } },
      { headers: this.#headers, timeoutMs: 10_000 },
    );
  }

  close(): void {
    if (this.#pid !== undefined && this.#exit === undefined)
      this.#client
        .sendSignal(
          { process: { selector: { case: 'pid', value: this.#pid } }, signal: Signal.SIGKILL },
          { headers: this.#headers, timeoutMs: 5000 },
        )
        .catch(() => undefined)
        .finally(() => {
          this.#ac.abort();
        });
    else this.#ac.abort();
    this.#finish('closed');
  }
}

/**
 * The dashboard's terminals: real PTY shells in guests, through each sandbox's guest agent (the
 * same process service the SDK's `pty` reaches through the envd proxy), as the default guest
 * user. Output is kept (bounded) so a viewer that reconnects sees the screen; a terminal nobody
 * watches for TERMINAL_UNWATCHED_MS is ended.
 */
export class TerminalService {
  readonly #agent: AgentOf;
  readonly #log: Logger;
  readonly #terms = new Map<string, GuestTerminal>();
  readonly #timer: NodeJS.Timeout;
  readonly #user: string;

  /** `user`: the guest user shells run as (default the SDK's default, `user`). */
  constructor(deps: { agent: AgentOf; log: Logger; user?: string }) {
    this.#agent = deps.agent;
    this.#user = deps.user ?? DASHBOARD_GUEST_USER;
    this.#log = deps.log;
    this.#timer = setInterval(() => {
      this.#sweep();
    }, 10_000);
    this.#timer.unref();
  }

  /** Opens a shell of `cols` x `rows` in a running sandbox. */
  async open(sandboxId: string, owner: string, cols: number, rows: number): Promise<Terminal> {
    const size = checkSize(cols, rows);
    if (this.#terms.size >= MAX_TERMINALS)
      throw new KilnError('capacity', `at most ${MAX_TERMINALS} terminals at once; close one first`);
    const { sandbox, baseUrl } = await this.#agent(sandboxId);
    const t = new GuestTerminal(sandboxId, owner, baseUrl, sandbox.accessToken, this.#user);
    this.#terms.set(t.id, t);
    try {
      await t.start(size, () => {
        this.#terms.delete(t.id);
      });
    } catch (e) {
      this.#terms.delete(t.id);
      throw e;
    }
    this.#log.info({ terminal: t.id, sandboxId }, 'terminal opened');
    return t;
  }

  /** The terminal `id` opened by `owner`; `not_found` otherwise (another's answers the same). */
  get(id: string, owner: string): Terminal {
    const t = this.#terms.get(id);
    if (!t || t.owner !== owner) throw new KilnError('not_found', `terminal "${id}" does not exist`);
    return t;
  }

  #sweep(): void {
    const now = Date.now();
    for (const t of this.#terms.values())
      if (t.ended || t.unwatchedFor(TERMINAL_UNWATCHED_MS, now)) {
        t.close();
        this.#terms.delete(t.id);
      }
  }

  /** Ends every terminal (kilnd stops). */
  close(): void {
    clearInterval(this.#timer);
    for (const t of this.#terms.values()) t.close();
    this.#terms.clear();
  }
}
