import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { Code, ConnectError, createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { KilnError } from '../core/errors.ts';
import { Process } from '../core/envd/process/process_pb.js';

export interface ExecOpts {
  user?: string;
  envs?: Record<string, string>;
  cwd?: string;
  /** Kill the command after this long (0 = never); E2B's Connect-Timeout-Ms. */
  timeoutMs?: number;
  /** Each stdout chunk; a returned promise holds the stream until it settles (backpressure). */
  onStdout?: (chunk: Uint8Array) => void | Promise<void>;
  /** False: stdout and stderr are only given to the callbacks, not kept for the result. */
  keepOutput?: boolean;
  onStderr?: (chunk: Uint8Array) => void;
  /**
   * Keep the command's stdin open for `writeStdin` (default: closed at start, so a command that
   * reads it sees EOF at once).
   */
  stdin?: boolean;
  /**
   * false: `bash -c`, not a login shell (kiln's own steps, which need no profile: under TCG a
   * login shell's start-up costs hundreds of milliseconds). Default true, as E2B runs commands.
   */
  login?: boolean;
  /** The command's pid in the guest, once it has started (before any output). */
  onStart?: (pid: number) => void;
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** envd's end status, e.g. `exit status 1` or `signal: killed`. */
  status: string;
}

export interface InitBody {
  accessToken?: string;
  envVars?: Record<string, string>;
  defaultUser?: string;
  defaultWorkdir?: string;
  /** The host's time: the guest sets its clock from it (after every restore). */
  timestamp: string;
  /**
   * Fresh randomness (base64, 32-256 bytes) the agent adds to the kernel's pool, forcing a CRNG
   * reseed, before it answers: clones of one snapshot must not share random output. Secret: never
   * logged.
   */
  entropySeed?: string;
}

/** What the agent says of an /init it took. */
export interface InitResult {
  /**
   * What became of `entropySeed` (kiln's `x-kiln-entropy` answer header): `reseeded` (in the
   * pool, CRNG re-keyed), `mixed` (in the pool only), `failed`, `unavailable` (an agent outside a
   * VM); undefined when none was sent or the agent predates it.
   */
  entropy: string | undefined;
}

/** How the daemon talks to one VM's guest agent. */
export interface GuestClient {
  /** Resolves when GET /health answers 2xx; `guest_agent_error` otherwise. */
  health(timeoutMs?: number): Promise<void>;
  /** POST /init. `currentToken` is the token the agent holds now (needed to change it). */
  init(body: InitBody, currentToken?: string): Promise<InitResult>;
  /** Runs `/bin/bash -l -c cmd` and collects its output (streamed to the callbacks as it comes). */
  exec(cmd: string, opts?: ExecOpts): Promise<ExecResult>;
  /**
   * Streams `input` to the stdin of process `pid` (started with `stdin: true`), then closes it
   * (envd's StreamInput, then CloseStdin). Input for a command that has ended (or closed its
   * stdin) is dropped: `ended` is then true, as a pipe's reader that went away.
   */
  writeStdin(
    pid: number,
    input: AsyncIterable<Uint8Array>,
    o?: { signal?: AbortSignal },
  ): Promise<{ ended: boolean }>;
  /** Streams `body` into the new file `path` in the guest, owned by `user` (envd's POST /files). */
  upload(path: string, body: Readable, o: { user: string; signal?: AbortSignal }): Promise<void>;
  /** GET /metrics: the guest's own view of CPU, memory and root disk (envd's field names). */
  metrics(): Promise<GuestMetrics>;
}

/** envd's GET /metrics body. */
export interface GuestMetrics {
  ts: number;
  cpu_count: number;
  cpu_used_pct: number;
  mem_total: number;
  mem_used: number;
  mem_cache: number;
  disk_used: number;
  disk_total: number;
}

/**
 * Server-side deadlines of every call into a guest (ms): a guest that stops answering fails the
 * call with `guest_agent_error` instead of hanging the caller.
 */
export interface GuestTimeouts {
  /** GET /health (a caller may ask for a shorter one). */
  healthMs: number;
  /** POST /init. */
  initMs: number;
  /** GET /metrics. */
  metricsMs: number;
  /**
   * A command stream that brings nothing, not even the agent's keep-alive (asked for every
   * third of this), for this long fails. The command's own run time is not limited by it.
   */
  execIdleMs: number;
}

export const DEFAULT_GUEST_TIMEOUTS: GuestTimeouts = {
  healthMs: 5000,
  initMs: 15_000,
  metricsMs: 10_000,
  execIdleMs: 30_000,
};

export interface HttpGuestClientOpts {
  /** `http://<VmInfo.hostAddr>:<forwarded port>` */
  baseUrl: string;
  accessToken?: string;
  /** The request's op id, forwarded so guest-side logs can be matched to it. */
  opId?: string;
  /** Deadlines; each missing one is DEFAULT_GUEST_TIMEOUTS'. */
  timeouts?: Partial<GuestTimeouts>;
}

/** Why a fetch to the guest failed, in words: a deadline says how long it waited. */
function fetchFailure(e: unknown, ms: number): string {
  const err = e as Error;
  return err.name === 'TimeoutError' ? `no answer within ${ms} ms` : err.message;
}

interface RestResult {
  status: number;
  text: string;
  headers: IncomingHttpHeaders;
}

/**
 * GuestClient over HTTP/1.1: node:http for REST, connect-node (binary) for process.Process.
 * REST calls of one client share ONE kept-alive connection: once `/health` has answered, the
 * `/init` that follows needs no new connection, so it does not queue behind other connections
 * to a busy guest (issue 10: a local process connecting every 10-30 ms kept a TCG guest's agent
 * seconds behind, and every fresh connection of kilnd's waited its turn). Idle, it closes itself.
 */
export class HttpGuestClient implements GuestClient {
  readonly #o: HttpGuestClientOpts;
  readonly #t: GuestTimeouts;
  readonly #process: Client<typeof Process>;
  readonly #http = new Agent({ keepAlive: true, maxSockets: 1, timeout: 20_000 });

  constructor(o: HttpGuestClientOpts) {
    this.#o = o;
    this.#t = { ...DEFAULT_GUEST_TIMEOUTS, ...o.timeouts };
    this.#process = createClient(
      Process,
      createConnectTransport({ baseUrl: o.baseUrl, httpVersion: '1.1', useBinaryFormat: true }),
    );
  }

  #headers(token = this.#o.accessToken): Record<string, string> {
    const h: Record<string, string> = {};
    if (token) h['x-access-token'] = token;
    if (this.#o.opId) h['x-kiln-op-id'] = this.#o.opId;
    return h;
  }

  /** One REST request on this client's connection; rejects on connection errors and timeouts. */
  #rest(
    method: string,
    path: string,
    o: { headers?: Record<string, string>; body?: string; timeoutMs: number },
  ): Promise<RestResult> {
    return new Promise((resolve, reject) => {
      const body = o.body === undefined ? undefined : Buffer.from(o.body);
      const req = request(
        `${this.#o.baseUrl}${path}`,
        {
          method,
          agent: this.#http,
          headers: { ...o.headers, ...(body ? { 'content-length': String(body.length) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(timer);
            resolve({
              status: res.statusCode ?? 0,
              text: Buffer.concat(chunks).toString('utf8'),
              headers: res.headers,
            });
          });
          res.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
          });
        },
      );
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${o.timeoutMs} ms`));
      }, o.timeoutMs);
      req.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      req.end(body);
    });
  }

  async health(timeoutMs = this.#t.healthMs): Promise<void> {
    let res: RestResult;
    try {
      res = await this.#rest('GET', '/health', { timeoutMs });
    } catch (e) {
      throw new KilnError(
        'guest_agent_error',
        `guest agent at ${this.#o.baseUrl} did not answer /health: ${fetchFailure(e, timeoutMs)}`,
        { cause: e },
      );
    }
    if (res.status < 200 || res.status > 299) {
      throw new KilnError('guest_agent_error', `guest agent /health answered ${res.status}`);
    }
  }

  async init(body: InitBody, currentToken?: string): Promise<InitResult> {
    const res = await this.#rest('POST', '/init', {
      headers: { 'content-type': 'application/json', ...this.#headers(currentToken) },
      body: JSON.stringify(body),
      timeoutMs: this.#t.initMs,
    }).catch((e: unknown) => {
      throw new KilnError('guest_agent_error', `guest agent /init failed: ${(e as Error).message}`, {
        cause: e,
      });
    });
    if (res.status !== 204) {
      throw new KilnError('guest_agent_error', `guest agent /init answered ${res.status}: ${res.text}`);
    }
    const entropy = res.headers['x-kiln-entropy'];
    return { entropy: typeof entropy === 'string' ? entropy : undefined };
  }

  async metrics(): Promise<GuestMetrics> {
    const res = await this.#rest('GET', '/metrics', {
      headers: this.#headers(),
      timeoutMs: this.#t.metricsMs,
    }).catch((e: unknown) => {
      throw new KilnError('guest_agent_error', `guest agent /metrics failed: ${(e as Error).message}`, {
        cause: e,
      });
    });
    if (res.status !== 200)
      throw new KilnError('guest_agent_error', `guest agent /metrics answered ${res.status}: ${res.text}`);
    return JSON.parse(res.text) as GuestMetrics;
  }

  /**
   * Streams `body` into the guest's `path` as `user` (POST /files, octet-stream): the guest agent
   * writes it as it arrives. `guest_agent_error` with the agent's answer when it refuses.
   */
  upload(path: string, body: Readable, o: { user: string; signal?: AbortSignal }): Promise<void> {
    return new Promise((resolve, reject) => {
      const q = new URLSearchParams({ path, username: o.user });
      const req = request(`${this.#o.baseUrl}/files?${q.toString()}`, {
        method: 'POST',
        // Its own connection, closed at the end (a long upload must not hold the REST one).
        agent: false,
        headers: { ...this.#headers(), 'content-type': 'application/octet-stream' },
        ...(o.signal ? { signal: o.signal } : {}),
      });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text = (text + c).slice(-4096)));
        res.on('end', () => {
          if (res.statusCode === 200) resolve();
          else
            reject(
              new KilnError(
                res.statusCode === 507 ? 'no_space' : 'guest_agent_error',
                `the guest refused the upload to ${path} (${res.statusCode}): ${text.trim()}`,
              ),
            );
        });
        res.on('error', reject);
      });
      req.on('error', (e) => {
        reject(
          e.name === 'AbortError'
            ? new KilnError('cancelled', `upload to ${path} cancelled`)
            : new KilnError('guest_agent_error', `upload to ${path} failed: ${e.message}`, { cause: e }),
        );
      });
      body.on('error', (e) => {
        req.destroy(e);
      });
      // The exec streams' idle deadline: a guest that takes nothing and answers nothing for that long is gone.
      req.setTimeout(this.#t.execIdleMs, () => {
        req.destroy(new Error(`the sandbox took nothing for ${this.#t.execIdleMs} ms`));
      });
      body.pipe(req);
    });
  }

  async writeStdin(
    pid: number,
    input: AsyncIterable<Uint8Array>,
    o: { signal?: AbortSignal } = {},
  ): Promise<{ ended: boolean }> {
    const process = { selector: { case: 'pid' as const, value: pid } };
    const call = { headers: this.#headers(), ...(o.signal ? { signal: o.signal } : {}) };
    async function* messages() {
      yield { event: { case: 'start' as const, value: { process } } };
      for await (const chunk of input)
        yield {
          event: {
            case: 'data' as const,
            value: { input: { input: { case: 'stdin' as const, value: chunk } } },
          },
        };
    }
    try {
      try {
        await this.#process.streamInput(messages(), call);
      } finally {
        // Also when the input broke off: the command sees EOF rather than waiting for more.
        await this.#process.closeStdin({ process }, { headers: call.headers }).catch((e: unknown) => {
          if (ConnectError.from(e).code !== Code.NotFound) throw e;
        });
      }
      return { ended: false };
    } catch (e) {
      const ce = ConnectError.from(e);
      // The command ended (or its stdin did) while input was still coming: the rest is dropped.
      if (ce.code === Code.NotFound || /stdin not enabled or closed/.test(ce.rawMessage))
        return { ended: true };
      if (ce.code === Code.Canceled) throw new KilnError('cancelled', `stdin of process ${pid} cancelled`);
      throw new KilnError('guest_agent_error', `writing stdin of process ${pid} failed: ${ce.rawMessage}`, {
        cause: e,
      });
    }
  }

  async exec(cmd: string, opts: ExecOpts = {}): Promise<ExecResult> {
    const headers = this.#headers();
    if (opts.user) headers['authorization'] = `Basic ${Buffer.from(`${opts.user}:`).toString('base64')}`;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const keep = opts.keepOutput ?? true;
    let end: { exitCode: number; status: string } | undefined;
    // The idle deadline: every message (data, keep-alive, end) re-arms it. The agent is asked for
    // keep-alives three times per deadline, so a quiet command stays alive and a mute guest fails.
    const idleMs = this.#t.execIdleMs;
    headers['keepalive-ping-interval'] = String(Math.max(1, Math.floor(idleMs / 3000)));
    const ac = new AbortController();
    const idle = { hit: false };
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        idle.hit = true;
        ac.abort();
      }, idleMs);
    };
    const onAbort = (): void => {
      ac.abort();
    };
    if (opts.signal?.aborted) ac.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    arm();
    try {
      const stream = this.#process.start(
        {
          process: {
            cmd: '/bin/bash',
            args: opts.login === false ? ['-c', cmd] : ['-l', '-c', cmd],
            envs: opts.envs ?? {},
            ...(opts.cwd ? { cwd: opts.cwd } : {}),
          },
          stdin: opts.stdin ?? false,
        },
        { headers, timeoutMs: opts.timeoutMs ?? 0, signal: ac.signal },
      );
      for await (const m of stream) {
        arm();
        const ev = m.event?.event;
        if (ev?.case === 'start') opts.onStart?.(ev.value.pid);
        else if (ev?.case === 'data') {
          const o = ev.value.output;
          if (o.case === 'stdout') {
            if (keep) out.push(Buffer.from(o.value));
            await opts.onStdout?.(o.value);
          } else if (o.case === 'stderr') {
            if (keep || err.length < 64) err.push(Buffer.from(o.value));
            opts.onStderr?.(o.value);
          }
        } else if (ev?.case === 'end') {
          end = { exitCode: ev.value.exitCode, status: ev.value.status };
        }
      }
    } catch (e) {
      throw execFailure(e, cmd, idle.hit ? idleMs : undefined, opts.timeoutMs ?? 0);
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (!end)
      throw new KilnError(
        'guest_agent_error',
        `the guest agent ended the command stream without an exit status: ${cmd}`,
      );
    return {
      exitCode: end.exitCode,
      status: end.status,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
    };
  }
}

/**
 * The error of a command stream that failed: the idle deadline hit (`idleMs` set: a mute guest),
 * the command's own deadline, a cancel, a refused request, or another failure of the agent.
 */
function execFailure(e: unknown, cmd: string, idleMs: number | undefined, timeoutMs: number): KilnError {
  if (idleMs !== undefined)
    return new KilnError(
      'guest_agent_error',
      `the sandbox is not responding: its guest agent sent nothing, not even a keep-alive, for ${idleMs} ms while running: ${cmd}`,
      { cause: e, details: { idleMs } },
    );
  const ce = ConnectError.from(e);
  if (ce.code === Code.DeadlineExceeded)
    return new KilnError('timeout', `command timed out after ${timeoutMs} ms: ${cmd}`);
  if (ce.code === Code.Canceled) return new KilnError('cancelled', `command cancelled: ${cmd}`);
  if (ce.code === Code.InvalidArgument) return new KilnError('invalid_argument', ce.rawMessage);
  return new KilnError('guest_agent_error', `running a command in the guest failed: ${ce.rawMessage}`, {
    cause: e,
  });
}
