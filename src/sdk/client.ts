import { request } from 'node:http';
import { ERROR_CODES, KilnError, type ErrorCode } from '../core/errors.ts';

export interface SandboxView {
  sandboxId: string;
  templateId: string;
  state: string;
  memoryMiB: number;
  vcpus: number;
  metadata: Record<string, string>;
  createdAt: string;
  startedAt: string | null;
  endAt: string;
  endReason: string | null;
  envdAccessToken: string;
}

export interface TemplateView {
  id: string;
  name: string;
  imageKey: string;
  memoryMiB: number;
  vcpus: number;
  snapshotId: string | null;
  createdAt: string;
}

export interface CreateSandboxOpts {
  template: string;
  timeoutS?: number;
  metadata?: Record<string, string>;
  envVars?: Record<string, string>;
  memoryMiB?: number;
  vcpus?: number;
  allowInternet?: boolean;
}

export interface ExecStreamOpts {
  user?: string;
  cwd?: string;
  envs?: Record<string, string>;
  timeoutMs?: number;
  onStdout?: (b: Buffer) => void;
  onStderr?: (b: Buffer) => void;
}

export interface StatsView {
  sandboxId: string;
  cpuPct: number;
  rssBytes: number;
  pssBytes: number;
  diskBytes: number;
  memoryMiB: number;
  at: string;
}

export interface EventView {
  seq: number;
  at: string;
  level: string;
  message: string;
  data: Record<string, unknown> | null;
}

export interface ApiKeyView {
  id: string;
  name: string;
  /** The key's first characters (the key itself is shown only when created). */
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

/** What points the `e2b` SDK at this kilnd. */
export interface E2bEnvView {
  apiUrl: string;
  sandboxUrl: string;
  apiKey: string;
}

/** An error kiln answered with: the catalog code, the message and the request's op id. */
export class KilnApiError extends KilnError {
  readonly opId: string | undefined;
  constructor(code: ErrorCode, message: string, opId: string | undefined) {
    super(code, message, { details: opId ? { opId } : {} });
    this.opId = opId;
  }
}

interface Raw {
  status: number;
  body: string;
  opId: string | undefined;
}

/** A typed client of kilnd's native API over its unix socket. */
export class KilnClient {
  readonly socketPath: string;

  constructor(o: { socketPath: string }) {
    this.socketPath = o.socketPath;
  }

  #send(method: string, path: string, body?: unknown, onChunk?: (s: string) => void): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          // A fresh connection per call: a restarted daemon must not meet a stale pooled socket.
          agent: false,
          headers: data
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }
            : {},
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            if (onChunk && res.statusCode === 200) onChunk(d);
            else text += d;
          });
          res.on('end', () => {
            const h = res.headers['x-kiln-op-id'];
            resolve({ status: res.statusCode ?? 0, body: text, opId: typeof h === 'string' ? h : undefined });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.#send(method, path, body);
    if (r.status >= 200 && r.status < 300) return (r.body ? JSON.parse(r.body) : undefined) as T;
    let err: { code?: string; message?: string; opId?: string } = {};
    try {
      err = JSON.parse(r.body) as typeof err;
    } catch {
      // not JSON: fall through with the raw text
    }
    const code = (err.code && err.code in ERROR_CODES ? err.code : 'internal') as ErrorCode;
    throw new KilnApiError(code, err.message ?? (r.body || `HTTP ${r.status}`), err.opId ?? r.opId);
  }

  health(): Promise<{ ok: boolean; version: string }> {
    return this.#json('GET', '/v1/health');
  }

  createSandbox(o: CreateSandboxOpts): Promise<SandboxView> {
    return this.#json('POST', '/v1/sandboxes', o);
  }

  async listSandboxes(
    f: { states?: string[]; metadata?: Record<string, string>; limit?: number; cursor?: string } = {},
  ): Promise<{ items: SandboxView[]; next: string | null }> {
    const q = new URLSearchParams();
    if (f.states?.length) q.set('state', f.states.join(','));
    for (const [k, v] of Object.entries(f.metadata ?? {})) q.set(`metadata.${k}`, v);
    if (f.limit) q.set('limit', String(f.limit));
    if (f.cursor) q.set('cursor', f.cursor);
    return this.#json('GET', `/v1/sandboxes${q.size ? `?${q.toString()}` : ''}`);
  }

  getSandbox(id: string): Promise<SandboxView> {
    return this.#json('GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  async killSandbox(id: string): Promise<void> {
    await this.#json('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }

  setTimeout(id: string, timeoutS: number): Promise<SandboxView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/timeout`, { timeoutS });
  }

  stats(id: string): Promise<StatsView> {
    return this.#json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/stats`);
  }

  logs(
    id: string,
    page: { limit?: number; cursor?: string } = {},
  ): Promise<{ items: EventView[]; next: string | null }> {
    const q = new URLSearchParams();
    if (page.limit) q.set('limit', String(page.limit));
    if (page.cursor) q.set('cursor', page.cursor);
    return this.#json(
      'GET',
      `/v1/sandboxes/${encodeURIComponent(id)}/logs${q.size ? `?${q.toString()}` : ''}`,
    );
  }

  listTemplates(): Promise<{ items: TemplateView[] }> {
    return this.#json('GET', '/v1/templates');
  }

  buildTemplate(o: { name?: string; memoryMiB?: number; vcpus?: number } = {}): Promise<TemplateView> {
    return this.#json('POST', '/v1/templates', o);
  }

  /** Issues an API key for the E2B-compatible API; `key` is shown only in this answer. */
  createApiKey(name?: string): Promise<ApiKeyView & { key: string }> {
    return this.#json('POST', '/v1/api-keys', name === undefined ? {} : { name });
  }

  listApiKeys(): Promise<{ items: ApiKeyView[] }> {
    return this.#json('GET', '/v1/api-keys');
  }

  async deleteApiKey(id: string): Promise<void> {
    await this.#json('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`);
  }

  /** The E2B API and envd proxy URLs and a key for them (created on first use, then reused). */
  e2bEnv(): Promise<E2bEnvView> {
    return this.#json('POST', '/v1/e2b/env');
  }

  /** Runs a command, streaming its output to the callbacks; resolves with the exit code. */
  async exec(id: string, cmd: string, o: ExecStreamOpts = {}): Promise<{ exitCode: number; status: string }> {
    let buf = '';
    let exit: { exitCode: number; status: string } | undefined;
    let failure: { code: string; message: string; opId?: string } | undefined;
    const onLine = (l: string): void => {
      if (!l.trim()) return;
      const m = JSON.parse(l) as {
        stdout?: string;
        stderr?: string;
        exit?: typeof exit;
        error?: typeof failure;
      };
      if (m.stdout !== undefined) o.onStdout?.(Buffer.from(m.stdout, 'base64'));
      if (m.stderr !== undefined) o.onStderr?.(Buffer.from(m.stderr, 'base64'));
      if (m.exit) exit = m.exit;
      if (m.error) failure = m.error;
    };
    const body = { cmd, user: o.user, cwd: o.cwd, envs: o.envs, timeoutMs: o.timeoutMs };
    const r = await this.#send('POST', `/v1/sandboxes/${encodeURIComponent(id)}/exec`, body, (chunk) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    if (r.status !== 200) {
      const e = JSON.parse(r.body || '{}') as { code?: string; message?: string; opId?: string };
      throw new KilnApiError(
        (e.code ?? 'internal') as ErrorCode,
        e.message ?? `HTTP ${r.status}`,
        e.opId ?? r.opId,
      );
    }
    onLine(buf);
    if (failure) throw new KilnApiError(failure.code as ErrorCode, failure.message, failure.opId);
    if (!exit)
      throw new KilnApiError('guest_agent_error', 'the command stream ended without an exit status', r.opId);
    return exit;
  }
}
