import { request, type IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { ERROR_CODES, KilnError, type ErrorCode } from '../core/errors.ts';
import { feedStdin } from './exec-stdin.ts';
import type {
  BuildLogLine,
  TemplateBuildRequest,
  TemplateBuildView,
  TemplateDetailView,
  TemplateGcRequest,
  TemplateGcView,
} from './template-types.ts';

export type * from './template-types.ts';

import type {
  ApiKeyView,
  BuildTemplateRequest,
  CreateSandboxRequest,
  CreatedApiKeyView,
  DashboardView,
  E2bEnvView,
  EventView,
  ExecLine,
  ExecRequest,
  ForkRequest,
  ForkView,
  HealthView,
  PageView,
  RestoreSnapshotRequest,
  SandboxView,
  SnapshotView,
  PortView,
  StatsView,
  TemplateView,
  UpdateNetworkRequest,
  VolumeView,
  WarmPoolView,
} from '../core/api-types.ts';

export type {
  ApiKeyView,
  DashboardView,
  E2bEnvView,
  EventView,
  ForkView,
  NetworkView,
  SandboxView,
  SnapshotView,
  PortView,
  StatsView,
  TemplateView,
  VolumeView,
  WarmPoolView,
} from '../core/api-types.ts';

/** The options of a create (the native API's request body, core/api-types.ts). */
export type CreateSandboxOpts = CreateSandboxRequest;

export interface ExecStreamOpts extends Omit<ExecRequest, 'cmd' | 'stdin'> {
  onStdout?: (b: Buffer) => void;
  onStderr?: (b: Buffer) => void;
  /**
   * Streamed to the command's stdin, which is closed at its end (without it the command reads
   * EOF at once). What the command leaves unread when it exits is dropped, as with a pipe.
   */
  stdin?: NodeJS.ReadableStream;
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

export function apiError(
  body: string,
  status: number,
  opHeader: string | string[] | undefined,
): KilnApiError {
  let err: { code?: string; message?: string; opId?: string } = {};
  try {
    err = JSON.parse(body) as typeof err;
  } catch {
    // not JSON: the raw text is the message
  }
  const code = (err.code && err.code in ERROR_CODES ? err.code : 'internal') as ErrorCode;
  return new KilnApiError(
    code,
    err.message ?? (body || `HTTP ${status}`),
    err.opId ?? (typeof opHeader === 'string' ? opHeader : undefined),
  );
}

/**
 * Reads an answer to its end: with `ok`, resolves with its text when the status is `ok` and
 * rejects with the API error it carries otherwise; without, always rejects with that error.
 */
export function settleAnswer(
  res: IncomingMessage,
  resolve: (text: string) => void,
  reject: (e: unknown) => void,
  ok?: number,
): void {
  let text = '';
  res.setEncoding('utf8').on('data', (d: string) => (text += d));
  res.on('error', reject);
  res.on('end', () => {
    if (ok !== undefined && res.statusCode === ok) resolve(text);
    else reject(apiError(text, res.statusCode ?? 0, res.headers['x-kiln-op-id']));
  });
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
    throw apiError(r.body, r.status, r.opId);
  }

  health(): Promise<HealthView> {
    return this.#json('GET', '/v1/health');
  }

  createSandbox(o: CreateSandboxOpts): Promise<SandboxView> {
    return this.#json('POST', '/v1/sandboxes', o);
  }

  async listSandboxes(
    f: { states?: string[]; metadata?: Record<string, string>; limit?: number; cursor?: string } = {},
  ): Promise<PageView<SandboxView>> {
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

  /** Replaces a running or paused sandbox's egress rules (omitted fields are cleared). */
  updateNetwork(id: string, o: UpdateNetworkRequest): Promise<SandboxView> {
    return this.#json('PUT', `/v1/sandboxes/${encodeURIComponent(id)}/network`, o);
  }

  setTimeout(id: string, timeoutS: number): Promise<SandboxView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/timeout`, { timeoutS });
  }

  /** Where guest port `port` of a live sandbox is reached from the host (an http URL). */
  port(id: string, port: number): Promise<PortView> {
    return this.#json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/ports/${port}`);
  }

  stats(id: string): Promise<StatsView> {
    return this.#json('GET', `/v1/sandboxes/${encodeURIComponent(id)}/stats`);
  }

  logs(id: string, page: { limit?: number; cursor?: string } = {}): Promise<PageView<EventView>> {
    const q = new URLSearchParams();
    if (page.limit) q.set('limit', String(page.limit));
    if (page.cursor) q.set('cursor', page.cursor);
    return this.#json(
      'GET',
      `/v1/sandboxes/${encodeURIComponent(id)}/logs${q.size ? `?${q.toString()}` : ''}`,
    );
  }

  snapshot(id: string, o: { name?: string } = {}): Promise<SnapshotView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/snapshots`, o);
  }

  /** `memory: false` keeps the filesystem only: the resume boots the guest afresh. */
  pause(id: string, o: { memory?: boolean } = {}): Promise<SandboxView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/pause`, o);
  }

  /** `memory: false` cold-boots it on its pause's disk even if that pause kept memory. */
  resume(id: string, o: { timeoutS?: number; memory?: boolean } = {}): Promise<SandboxView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/resume`, o);
  }

  fork(id: string, o: ForkRequest): Promise<ForkView> {
    return this.#json('POST', `/v1/sandboxes/${encodeURIComponent(id)}/fork`, o);
  }

  listSnapshots(f: { kind?: string; sandboxId?: string } = {}): Promise<{ items: SnapshotView[] }> {
    const q = new URLSearchParams();
    if (f.kind) q.set('kind', f.kind);
    if (f.sandboxId) q.set('sandboxId', f.sandboxId);
    return this.#json('GET', `/v1/snapshots${q.size ? `?${q.toString()}` : ''}`);
  }

  getSnapshot(id: string): Promise<SnapshotView> {
    return this.#json('GET', `/v1/snapshots/${encodeURIComponent(id)}`);
  }

  async deleteSnapshot(id: string): Promise<void> {
    await this.#json('DELETE', `/v1/snapshots/${encodeURIComponent(id)}`);
  }

  restoreSnapshot(id: string, o: RestoreSnapshotRequest = {}): Promise<SandboxView> {
    return this.#json('POST', `/v1/snapshots/${encodeURIComponent(id)}/restore`, o);
  }

  /** Streams snapshot `id`'s portable archive into `out`; `onProgress` gets the bytes so far. */
  exportSnapshot(
    id: string,
    out: NodeJS.WritableStream,
    onProgress?: (bytes: number) => void,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method: 'GET',
          path: `/v1/snapshots/${encodeURIComponent(id)}/export`,
          agent: false,
        },
        (res) => {
          if (res.statusCode !== 200) {
            settleAnswer(res, () => undefined, reject);
            return;
          }
          let n = 0;
          res.on('data', (c: Buffer) => {
            n += c.length;
            onProgress?.(n);
          });
          pipeline(res, out).then(resolve, (e: unknown) => {
            reject(
              new KilnError(
                'internal',
                `export of ${id} broke off after ${n} bytes: ${(e as Error).message}`,
              ),
            );
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  /** Uploads a snapshot archive; resolves with the imported snapshot. */
  async importSnapshot(
    input: NodeJS.ReadableStream,
    onProgress?: (bytes: number) => void,
  ): Promise<SnapshotView> {
    return JSON.parse(
      await this.#uploadTar('POST', '/v1/snapshots/import', 201, input, onProgress),
    ) as SnapshotView;
  }

  /** Streams a tar as a request's body; resolves with the answer's text when its status is `ok`. */
  #uploadTar(
    method: string,
    path: string,
    ok: number,
    input: NodeJS.ReadableStream,
    onProgress?: (bytes: number) => void,
  ): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          agent: false,
          headers: { 'content-type': 'application/x-tar' },
        },
        (res) => {
          settleAnswer(res, resolve, reject, ok);
        },
      );
      req.on('error', reject);
      let n = 0;
      input.on('data', (c: Buffer) => {
        n += c.length;
        onProgress?.(n);
      });
      pipeline(input, req).catch(reject);
    });
  }

  /** Starts a template build from a step list (E2B's TemplateBuildStartV2 fields plus name). */
  startTemplateBuild(o: TemplateBuildRequest): Promise<TemplateBuildView> {
    return this.#json('POST', '/v1/template-builds', o);
  }

  /** A build's status and its log lines from `logsOffset`. */
  templateBuild(id: string, logsOffset = 0): Promise<TemplateBuildView & { logs: BuildLogLine[] }> {
    return this.#json('GET', `/v1/template-builds/${encodeURIComponent(id)}?logsOffset=${logsOffset}`);
  }

  /** Cancels a running build; resolves with it once it has ended. */
  cancelTemplateBuild(id: string): Promise<TemplateBuildView> {
    return this.#json('POST', `/v1/template-builds/${encodeURIComponent(id)}/cancel`);
  }

  async templateFilePresent(hash: string): Promise<boolean> {
    return (await this.#json<{ present: boolean }>('GET', `/v1/template-files/${encodeURIComponent(hash)}`))
      .present;
  }

  /** Uploads a build context tar under its hash. */
  async uploadTemplateFile(hash: string, input: NodeJS.ReadableStream): Promise<void> {
    await this.#uploadTar('PUT', `/v1/template-files/${encodeURIComponent(hash)}`, 204, input);
  }

  /** Every template with a warm pool size or members. */
  warmPools(): Promise<{ items: WarmPoolView[] }> {
    return this.#json('GET', '/v1/warm-pool');
  }

  /** A template's warm pool. */
  warmPool(template: string): Promise<WarmPoolView> {
    return this.#json('GET', `/v1/templates/${encodeURIComponent(template)}/warm-pool`);
  }

  /** Sets a template's warm pool size (`null`: back to the default); it refills or drains in the background. */
  setWarmPool(template: string, size: number | null): Promise<WarmPoolView> {
    return this.#json(
      'PUT',
      `/v1/templates/${encodeURIComponent(template)}/warm-pool`,
      size === null ? { reset: true } : { size },
    );
  }

  /** A template built from steps, with its builds. */
  getTemplate(idOrName: string): Promise<TemplateDetailView> {
    return this.#json('GET', `/v1/templates/${encodeURIComponent(idOrName)}`);
  }

  /** Template garbage collection: removes unused hidden templates and layers (`dryRun`: only says which). */
  collectTemplates(o: TemplateGcRequest = {}): Promise<TemplateGcView> {
    return this.#json('POST', '/v1/templates/gc', o);
  }

  async deleteTemplate(idOrName: string): Promise<void> {
    await this.#json('DELETE', `/v1/templates/${encodeURIComponent(idOrName)}`);
  }

  listTemplates(): Promise<{ items: TemplateView[] }> {
    return this.#json('GET', '/v1/templates');
  }

  buildTemplate(o: BuildTemplateRequest = {}): Promise<TemplateView> {
    return this.#json('POST', '/v1/templates', o);
  }

  /** Issues an API key for the E2B-compatible API; `key` is shown only in this answer. */
  createApiKey(name?: string, o: { admin?: boolean } = {}): Promise<CreatedApiKeyView> {
    return this.#json('POST', '/v1/api-keys', {
      ...(name === undefined ? {} : { name }),
      ...(o.admin ? { admin: true } : {}),
    });
  }

  listApiKeys(): Promise<{ items: ApiKeyView[] }> {
    return this.#json('GET', '/v1/api-keys');
  }

  async deleteApiKey(id: string): Promise<void> {
    await this.#json('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`);
  }

  createVolume(name: string): Promise<VolumeView> {
    return this.#json('POST', '/v1/volumes', { name });
  }

  listVolumes(): Promise<{ items: VolumeView[] }> {
    return this.#json('GET', '/v1/volumes');
  }

  /** Deletes a volume (by id or name) and its files; refused while a live sandbox mounts it. */
  async deleteVolume(idOrName: string): Promise<void> {
    await this.#json('DELETE', `/v1/volumes/${encodeURIComponent(idOrName)}`);
  }

  /** The web dashboard's URL; with `link`, a one-time sign-in link (good for two minutes). */
  dashboard(link = false): Promise<DashboardView> {
    return link ? this.#json('POST', '/v1/dashboard/link') : this.#json('GET', '/v1/dashboard');
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
    let feeding: { stop: () => void } | undefined;
    const onLine = (l: string): void => {
      if (!l.trim()) return;
      const m = JSON.parse(l) as ExecLine;
      if ('start' in m && o.stdin) feeding = feedStdin(this.socketPath, id, m.start.pid, o.stdin);
      if ('stdout' in m) o.onStdout?.(Buffer.from(m.stdout, 'base64'));
      if ('stderr' in m) o.onStderr?.(Buffer.from(m.stderr, 'base64'));
      if ('exit' in m) exit = m.exit;
      if ('error' in m) failure = m.error;
    };
    const body: ExecRequest = {
      cmd,
      user: o.user,
      cwd: o.cwd,
      envs: o.envs,
      timeoutMs: o.timeoutMs,
      ...(o.stdin ? { stdin: true } : {}),
    };
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
    // The command has ended: input it did not read is not waited for (nor its failure reported).
    feeding?.stop();
    if (failure) throw new KilnApiError(failure.code as ErrorCode, failure.message, failure.opId);
    if (!exit)
      throw new KilnApiError('guest_agent_error', 'the command stream ended without an exit status', r.opId);
    return exit;
  }
}
