import type {
  SandboxRecord,
  SandboxState,
  SnapshotKind,
  SnapshotRecord,
  TemplateRecord,
} from '../core/domain.ts';
import { KilnError, asKilnError, invalidArgument } from '../core/errors.ts';
import {
  MAX_EXEC_TIMEOUT_MS,
  validateInt,
  validateMemoryMiB,
  validateName,
  validateStringMap,
  validateVcpus,
} from '../core/validate.ts';
import type { ApiKeyRecord } from '../core/domain.ts';
import type { ApiKeyService } from '../daemon/api-keys.ts';
import type { CreateRequest, SandboxService } from '../daemon/sandbox-service.ts';
import { PassThrough } from 'node:stream';
import { clientGone, type Route } from './http.ts';

export const API_VERSION = 'v1';

/** Builds (or rebuilds) a template; the daemon supplies the image side. */
export type TemplateBuilder = (
  name: string,
  res: { memoryMiB: number; vcpus: number },
  opId: string,
) => Promise<TemplateRecord>;

/** The public view of a sandbox (the same names the E2B API uses where they overlap). */
export function sandboxView(s: SandboxRecord): Record<string, unknown> {
  return {
    sandboxId: s.id,
    templateId: s.templateId,
    state: s.state,
    memoryMiB: s.memoryMiB,
    vcpus: s.vcpus,
    metadata: s.metadata,
    createdAt: s.createdAt,
    startedAt: s.startedAt,
    endAt: s.endAt,
    endReason: s.endReason,
    condition: s.condition,
    envdAccessToken: s.accessToken,
    ownerKeyId: s.ownerKeyId,
  };
}

/** What `kiln e2b env` prints: where the E2B API and the envd proxy listen, and a key for them. */
export interface E2bEnv {
  apiUrl: string;
  sandboxUrl: string;
  apiKey: string;
}

/** An API key as listed: never the key itself (only its hash is kept), its prefix instead. */
const apiKeyView = (k: ApiKeyRecord): Record<string, unknown> => ({
  id: k.id,
  name: k.name,
  prefix: k.prefix,
  createdAt: k.createdAt,
  lastUsedAt: k.lastUsedAt,
  admin: k.admin,
});
/** The public view of a snapshot (the guest token it holds stays private). */
export function snapshotView(x: SnapshotRecord): Record<string, unknown> {
  return {
    snapshotId: x.id,
    name: x.name,
    kind: x.kind,
    sandboxId: x.sandboxId,
    templateId: x.templateId,
    parentId: x.parentId,
    memoryMiB: x.memoryMiB,
    vcpus: x.vcpus,
    pauseMs: x.pauseMs,
    artifacts: x.artifacts,
    createdAt: x.createdAt,
    ownerKeyId: x.ownerKeyId,
  };
}

const KINDS: SnapshotKind[] = ['template', 'snapshot', 'pause', 'fork'];

/** The create options shared by POST /v1/sandboxes and POST /v1/snapshots/:id/restore. */
function createOpts(b: Record<string, unknown>): Omit<CreateRequest, 'template'> {
  return {
    ...(b['timeoutS'] === undefined ? {} : { timeoutS: optInt(b, 'timeoutS') ?? 0 }),
    metadata: b['metadata'] as Record<string, string> | undefined,
    envVars: b['envVars'] as Record<string, string> | undefined,
    ...(b['memoryMiB'] === undefined ? {} : { memoryMiB: optInt(b, 'memoryMiB') ?? 0 }),
    ...(b['vcpus'] === undefined ? {} : { vcpus: optInt(b, 'vcpus') ?? 0 }),
    autoPause: optBool(b, 'autoPause') ?? false,
    autoResume: optBool(b, 'autoResume') ?? false,
    allowInternet: optBool(b, 'allowInternet') ?? true,
  };
}

const STATES: SandboxState[] = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing', 'dead'];

function optInt(body: Record<string, unknown>, field: string): number | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw invalidArgument(field, `must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function optString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgument(field, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function optBool(body: Record<string, unknown>, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalidArgument(field, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** kiln's native API (documented in docs/openapi.json; a test keeps the two in step). */
export function nativeRoutes(d: {
  svc: SandboxService;
  buildTemplate: TemplateBuilder;
  version: string;
  keys: ApiKeyService;
  e2bEnv: () => Promise<E2bEnv>;
}): Route[] {
  const { svc } = d;
  return [
    {
      method: 'POST',
      path: '/v1/api-keys',
      status: 201,
      handler: async (c) => {
        const b = await c.body();
        const name = optString(b, 'name') ?? 'default';
        const { record, key } = d.keys.create(name, { admin: optBool(b, 'admin') ?? false });
        return { ...apiKeyView(record), key };
      },
    },
    {
      method: 'GET',
      path: '/v1/api-keys',
      handler: () => Promise.resolve({ items: d.keys.list().map(apiKeyView) }),
    },
    {
      method: 'DELETE',
      path: '/v1/api-keys/:id',
      status: 204,
      handler: (c) => {
        d.keys.delete(c.params['id'] ?? '');
        return Promise.resolve(null);
      },
    },
    { method: 'POST', path: '/v1/e2b/env', handler: () => d.e2bEnv() },
    { method: 'GET', path: '/v1/health', handler: () => Promise.resolve({ ok: true, version: d.version }) },
    {
      method: 'GET',
      path: '/v1/templates',
      handler: () =>
        Promise.resolve({ items: svc.templates().map((t) => ({ ...t, ready: svc.templateReady(t) })) }),
    },
    {
      method: 'POST',
      path: '/v1/templates',
      status: 201,
      handler: async (c) => {
        const b = await c.body();
        // Checked before the build: it starts by checking the image cache, which takes seconds.
        const name = validateName('name', optString(b, 'name') ?? 'base');
        const memoryMiB = validateMemoryMiB(optInt(b, 'memoryMiB') ?? 512);
        const vcpus = validateVcpus(optInt(b, 'vcpus') ?? 1);
        return d.buildTemplate(name, { memoryMiB, vcpus }, c.opId);
      },
    },
    {
      method: 'POST',
      path: '/v1/sandboxes',
      status: 201,
      handler: async (c) => {
        const b = await c.body();
        const template = optString(b, 'template');
        if (template === undefined) throw invalidArgument('template', 'is required');
        return sandboxView(await svc.create({ template, ...createOpts(b) }, { opId: c.opId }));
      },
    },
    {
      method: 'GET',
      path: '/v1/sandboxes',
      handler: (c) => {
        const states = c.query.getAll('state').flatMap((s) => s.split(','));
        for (const s of states)
          if (!STATES.includes(s as SandboxState))
            throw invalidArgument('state', `"${s}" is not a sandbox state`);
        const metadata: Record<string, string> = {};
        for (const [k, v] of c.query)
          if (k.startsWith('metadata.')) metadata[k.slice('metadata.'.length)] = v;
        const limit = c.query.get('limit');
        const page = svc.list(
          { ...(states.length ? { states: states as SandboxState[] } : {}), metadata },
          { ...(limit ? { limit: Number(limit) } : {}), cursor: c.query.get('cursor') ?? undefined },
        );
        return Promise.resolve({ items: page.items.map(sandboxView), next: page.next ?? null });
      },
    },
    {
      method: 'GET',
      path: '/v1/sandboxes/:id',
      handler: (c) => Promise.resolve(sandboxView(svc.get(c.params['id'] ?? ''))),
    },
    {
      method: 'DELETE',
      path: '/v1/sandboxes/:id',
      status: 204,
      handler: async (c) => {
        await svc.kill(c.params['id'] ?? '', { opId: c.opId });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/v1/sandboxes/:id/timeout',
      handler: async (c) => {
        const t = optInt(await c.body(), 'timeoutS');
        if (t === undefined) throw invalidArgument('timeoutS', 'is required');
        return sandboxView(svc.setTimeout(c.params['id'] ?? '', t));
      },
    },
    {
      method: 'POST',
      path: '/v1/sandboxes/:id/snapshots',
      status: 201,
      handler: async (c) => {
        const name = optString(await c.body(), 'name');
        const snap = await svc.snapshot(c.params['id'] ?? '', name === undefined ? {} : { name }, {
          opId: c.opId,
        });
        return snapshotView(snap);
      },
    },
    {
      method: 'POST',
      path: '/v1/sandboxes/:id/pause',
      handler: async (c) => sandboxView(await svc.pause(c.params['id'] ?? '', { opId: c.opId })),
    },
    {
      method: 'POST',
      path: '/v1/sandboxes/:id/resume',
      handler: async (c) => {
        const t = optInt(await c.body(), 'timeoutS');
        return sandboxView(
          await svc.resume(c.params['id'] ?? '', t === undefined ? {} : { timeoutS: t }, { opId: c.opId }),
        );
      },
    },
    {
      method: 'POST',
      path: '/v1/sandboxes/:id/fork',
      status: 201,
      handler: async (c) => {
        const b = await c.body();
        const count = optInt(b, 'count') ?? 1;
        const t = optInt(b, 'timeoutS');
        const r = await svc.fork(
          c.params['id'] ?? '',
          { count, ...(t === undefined ? {} : { timeoutS: t }) },
          { opId: c.opId },
        );
        return {
          snapshotId: r.snapshot.id,
          results: r.results.map((x) =>
            'sandbox' in x
              ? { sandbox: sandboxView(x.sandbox) }
              : { error: { code: x.error.code, message: x.error.message } },
          ),
        };
      },
    },
    {
      method: 'GET',
      path: '/v1/snapshots',
      handler: (c) => {
        const kind = c.query.get('kind') ?? undefined;
        if (kind !== undefined && !KINDS.includes(kind as SnapshotKind))
          throw invalidArgument('kind', `"${kind}" is not one of ${KINDS.join(', ')}`);
        const sandboxId = c.query.get('sandboxId') ?? undefined;
        const items = svc.listSnapshots({
          ...(kind ? { kind: kind as SnapshotKind } : {}),
          ...(sandboxId ? { sandboxId } : {}),
        });
        return Promise.resolve({ items: items.map(snapshotView) });
      },
    },
    {
      method: 'GET',
      path: '/v1/snapshots/:id',
      handler: (c) => Promise.resolve(snapshotView(svc.getSnapshot(c.params['id'] ?? ''))),
    },
    {
      method: 'DELETE',
      path: '/v1/snapshots/:id',
      status: 204,
      handler: async (c) => {
        await svc.deleteSnapshot(c.params['id'] ?? '', { opId: c.opId });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/v1/snapshots/:id/restore',
      status: 201,
      handler: async (c) =>
        sandboxView(await svc.restore(c.params['id'] ?? '', createOpts(await c.body()), { opId: c.opId })),
    },
    {
      // Streams the archive (application/x-tar); errors before the first byte are JSON errors.
      method: 'GET',
      path: '/v1/snapshots/:id/export',
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const snap = svc.getSnapshot(id);
        const out = new PassThrough();
        const done = svc.exportSnapshot(snap.id, out, { opId: c.opId });
        // Headers go out with the first byte, so a failure before it is still a JSON error.
        await new Promise<void>((resolve, reject) => {
          out.once('readable', resolve);
          done.catch(reject);
        });
        c.res.writeHead(200, {
          'content-type': 'application/x-tar',
          'content-disposition': `attachment; filename="${snap.id}.tar"`,
        });
        out.pipe(c.res);
        // A client that goes away ends the export (and its staging files) instead of stalling it.
        c.res.on('close', () => {
          if (!c.res.writableFinished) out.destroy(new Error('the client went away'));
        });
        await done.catch((e: unknown) => {
          if (clientGone(c.req, c.res, e)) c.log.info('export ended: the client went away');
          else c.log.warn({ err: e }, 'export failed mid-stream');
          c.res.destroy();
        });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/v1/snapshots/import',
      status: 201,
      handler: async (c) => snapshotView(await svc.importSnapshot(c.req, { opId: c.opId })),
    },
    { method: 'GET', path: '/v1/sandboxes/:id/stats', handler: (c) => svc.stats(c.params['id'] ?? '') },
    {
      method: 'GET',
      path: '/v1/sandboxes/:id/logs',
      handler: (c) => {
        const limit = c.query.get('limit');
        const p = svc.logs(c.params['id'] ?? '', {
          ...(limit ? { limit: Number(limit) } : {}),
          cursor: c.query.get('cursor') ?? undefined,
        });
        return Promise.resolve({ items: p.items, next: p.next ?? null });
      },
    },
    {
      // Streams newline-delimited JSON: {"stdout":b64} / {"stderr":b64} lines, then {"exit":{...}}.
      method: 'POST',
      path: '/v1/sandboxes/:id/exec',
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const b = await c.body();
        const cmd = optString(b, 'cmd');
        if (!cmd) throw invalidArgument('cmd', 'is required');
        const user = optString(b, 'user');
        const cwd = optString(b, 'cwd');
        const timeoutMs =
          b['timeoutMs'] === undefined
            ? undefined
            : validateInt('timeoutMs', b['timeoutMs'], 0, MAX_EXEC_TIMEOUT_MS);
        const envs = validateStringMap('envs', b['envs']) ?? {};
        const s = svc.get(id);
        if (s.state !== 'running')
          throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; exec needs running`);
        const ac = new AbortController();
        c.res.on('close', () => {
          if (!c.res.writableFinished) ac.abort();
        });
        c.res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const line = (v: unknown): void => {
          c.res.write(JSON.stringify(v) + '\n');
        };
        try {
          const r = await svc.exec(
            id,
            cmd,
            {
              ...(user ? { user } : {}),
              ...(cwd ? { cwd } : {}),
              ...(timeoutMs === undefined ? {} : { timeoutMs }),
              envs,
              onStdout: (x) => {
                line({ stdout: Buffer.from(x).toString('base64') });
              },
              onStderr: (x) => {
                line({ stderr: Buffer.from(x).toString('base64') });
              },
              signal: ac.signal,
            },
            { opId: c.opId },
          );
          line({ exit: { exitCode: r.exitCode, status: r.status } });
        } catch (e) {
          const k = asKilnError(e);
          line({ error: { code: k.code, message: k.message, opId: c.opId } });
        }
        c.res.end();
        return null;
      },
    },
  ];
}
