/**
 * The E2B-compatible control plane: the routes the official `e2b` SDK calls (shapes from E2B's
 * public OpenAPI spec, as embedded in the SDK's typings), over the SandboxService. Every request
 * needs an `X-API-KEY` that kiln issued; errors are E2B's `{code: <http status>, message}`, the
 * status chosen by the catalog code.
 */
import type { IncomingMessage } from 'node:http';
import type { SandboxRecord, SandboxState, TemplateRecord } from '../core/domain.ts';
import { ENVD_VERSION } from '../core/envd-auth.ts';
import { ERROR_CODES, KilnError, invalidArgument, isKilnError } from '../core/errors.ts';
import { validateName } from '../core/validate.ts';
import type { ApiKeyService } from '../daemon/api-keys.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { sees, type Caller } from '../daemon/scope.ts';
import { sendJson, type Ctx, type Route, type RouterOpts } from './http.ts';
import type { TemplateBuilder } from './native.ts';

/** The template name E2B's SDK uses by default; kiln builds its default image under it. */
export const DEFAULT_TEMPLATE = 'base';
const DEFAULT_TEMPLATE_RES = { memoryMiB: 512, vcpus: 1 };
const MAX_LIST = 100;

export interface E2bApiDeps {
  svc: SandboxService;
  keys: ApiKeyService;
  buildTemplate: TemplateBuilder;
}

/** E2B's error body. */
export const e2bErrorBody = (e: KilnError): { code: number; message: string } => ({
  code: ERROR_CODES[e.code].status,
  message: e.message,
});

/** Router options for the E2B API: E2B's error shape and the `X-API-KEY` check. */
export function e2bRouterOpts(keys: ApiKeyService): RouterOpts {
  return {
    errorBody: e2bErrorBody,
    authenticate: (req: IncomingMessage) => {
      const k = req.headers['x-api-key'];
      keys.verify(typeof k === 'string' ? k : undefined);
    },
  };
}

/** E2B knows two states; kiln's transitional ones map to where they are heading. */
function e2bState(s: SandboxState): 'running' | 'paused' {
  return s === 'paused' || s === 'pausing' ? 'paused' : 'running';
}

const RUNNING: SandboxState[] = ['running', 'resuming'];
const PAUSED: SandboxState[] = ['paused', 'pausing'];
const E2B_STATES: Record<string, SandboxState[] | undefined> = { running: RUNNING, paused: PAUSED };

function optInt(body: Record<string, unknown>, field: string): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw invalidArgument(field, `must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function optBool(body: Record<string, unknown>, field: string): boolean | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalidArgument(field, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optStringMap(body: Record<string, unknown>, field: string): Record<string, string> | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalidArgument(field, 'must be an object of strings');
  return v as Record<string, string>;
}

/** What the store answers for a sandbox that does not exist (another key's answers the same). */
const noSandbox = (id: string): KilnError =>
  new KilnError('not_found', `sandbox "${id}" does not exist`, { details: { sandboxId: id } });
const noSnapshot = (id: string): KilnError =>
  new KilnError('not_found', `snapshot "${id}" does not exist`, { details: { snapshotId: id } });

/**
 * A live sandbox the caller may see, or `not_found`: another key's sandbox answers exactly as
 * one that does not exist (no existence oracle), and E2B forgets sandboxes once they end, so a
 * dead one answers 404 too.
 */
function live(svc: SandboxService, id: string, caller: Caller): SandboxRecord {
  const s = svc.get(id);
  if (!sees(caller, s.ownerKeyId)) throw noSandbox(id);
  if (s.state === 'dead' || s.state === 'killing')
    throw new KilnError(
      'not_found',
      `sandbox "${id}" does not exist (it ended: ${s.endReason ?? 'killed'})`,
      {
        details: { sandboxId: id },
      },
    );
  return s;
}

export function e2bRoutes(d: E2bApiDeps): Route[] {
  const { svc } = d;
  /** The key of the request (the router checked it already): whose objects it sees and makes. */
  const callerOf = (c: Ctx): Caller => {
    const k = c.req.headers['x-api-key'];
    const rec = d.keys.verify(typeof k === 'string' ? k : undefined);
    return { keyId: rec.id, admin: rec.admin };
  };
  const templates = new Map<string, TemplateRecord>();
  const templateOf = (id: string): TemplateRecord | undefined => {
    let t = templates.get(id);
    if (!t) {
      t = svc.templates().find((x) => x.id === id);
      if (t) templates.set(id, t);
    }
    return t;
  };

  /** `Sandbox` (what create and connect answer). */
  const sandboxBody = (s: SandboxRecord): Record<string, unknown> => {
    const t = templateOf(s.templateId);
    return {
      sandboxID: s.id,
      templateID: s.templateId,
      ...(t ? { alias: t.name } : {}),
      clientID: 'kiln',
      envdVersion: ENVD_VERSION,
      envdAccessToken: s.accessToken,
      trafficAccessToken: null,
      domain: null,
    };
  };

  /** `ListedSandbox`; `SandboxDetail` adds the token, domain, network and lifecycle. */
  const listedBody = (s: SandboxRecord): Record<string, unknown> => {
    const t = templateOf(s.templateId);
    return {
      sandboxID: s.id,
      templateID: s.templateId,
      ...(t ? { alias: t.name } : {}),
      clientID: 'kiln',
      startedAt: s.startedAt ?? s.createdAt,
      endAt: s.endAt,
      cpuCount: s.vcpus,
      memoryMB: s.memoryMiB,
      diskSizeMB: svc.diskSizeMiB(s) ?? 0,
      metadata: s.metadata,
      state: e2bState(s.state),
      envdVersion: ENVD_VERSION,
      volumeMounts: [],
    };
  };

  const detailBody = (s: SandboxRecord): Record<string, unknown> => ({
    ...listedBody(s),
    envdAccessToken: s.accessToken,
    domain: null,
    allowInternetAccess: s.allowInternet,
    lifecycle: { autoResume: s.autoResume, onTimeout: s.autoPause ? 'pause' : 'kill' },
  });

  /** `base` is built on first use, as `kiln run` does (once, however many creates wait); others must exist. */
  let building: Promise<unknown> | undefined;
  const resolveTemplate = async (name: string, opId: string): Promise<string> => {
    if (name === DEFAULT_TEMPLATE && !svc.templates().some((t) => t.name === name && svc.templateReady(t))) {
      building ??= d.buildTemplate(DEFAULT_TEMPLATE, DEFAULT_TEMPLATE_RES, opId).finally(() => {
        building = undefined;
      });
      await building;
    }
    return name;
  };

  return [
    {
      method: 'POST',
      path: '/v2/sandboxes',
      status: 201,
      handler: async (c) => {
        const b = await c.body();
        const tplId = b['templateID'];
        if (typeof tplId !== 'string' || tplId === '')
          throw invalidArgument('templateID', 'is required (a template name or id, e.g. "base")');
        // Before anything slow (a first create builds the base template).
        validateName('templateID', tplId);
        if (b['volumeMounts'] !== undefined)
          throw invalidArgument('volumeMounts', 'volumes are not supported by kiln');
        const net = b['network'];
        if (net !== undefined && net !== null && Object.keys(net).length > 0)
          throw invalidArgument(
            'network',
            'egress rules are not supported by kiln; use allow_internet_access (true or false)',
          );
        const autoPause = optBool(b, 'autoPause') ?? false;
        const ar = b['autoResume'];
        if (ar !== undefined && ar !== null && (typeof ar !== 'object' || Array.isArray(ar)))
          throw invalidArgument('autoResume', 'must be an object {enabled: boolean}');
        const autoResume =
          ar === undefined || ar === null
            ? false
            : (optBool(ar as Record<string, unknown>, 'enabled') ?? false);
        if (autoResume && !autoPause)
          throw invalidArgument('autoResume', 'needs autoPause: a sandbox resumes only from a pause');
        const timeoutS = optInt(b, 'timeout');
        const caller = callerOf(c);
        const s = await svc.create(
          {
            template: await resolveTemplate(tplId, c.opId),
            ...(timeoutS === undefined ? {} : { timeoutS }),
            ...(b['metadata'] == null ? {} : { metadata: optStringMap(b, 'metadata') ?? {} }),
            ...(b['envVars'] == null ? {} : { envVars: optStringMap(b, 'envVars') ?? {} }),
            autoPause,
            autoResume,
            allowInternet: optBool(b, 'allow_internet_access') ?? true,
          },
          { opId: c.opId, caller },
        );
        return sandboxBody(s);
      },
    },
    {
      method: 'POST',
      path: '/v2/sandboxes/:id/connect',
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const b = await c.body();
        const timeoutS = optInt(b, 'timeout');
        let s = live(svc, id, callerOf(c));
        if (s.state === 'paused' || s.state === 'pausing' || s.state === 'resuming') {
          // Connecting to a paused sandbox resumes it (201, as in E2B); one being paused is resumed
          // once that is done; one being resumed (by autoResume) is simply connected to.
          try {
            s = await svc.resume(id, timeoutS === undefined ? {} : { timeoutS }, { opId: c.opId });
          } catch (e) {
            if (!(isKilnError(e) && e.code === 'invalid_state' && svc.get(id).state === 'running')) throw e;
            return sandboxBody(svc.get(id));
          }
          sendJson(c.res, 201, sandboxBody(s));
          return null;
        }
        if (s.state !== 'running') throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}`);
        // Connecting never shortens a sandbox's life (as in E2B).
        if (timeoutS !== undefined && Date.parse(s.endAt) < Date.now() + timeoutS * 1000)
          s = svc.setTimeout(id, timeoutS);
        return sandboxBody(s);
      },
    },
    {
      method: 'GET',
      path: '/v2/sandboxes',
      handler: (c) => {
        const q = c.query;
        const states: SandboxState[] = [];
        for (const raw of q.getAll('state').flatMap((x) => x.split(','))) {
          const st = E2B_STATES[raw];
          if (!st) throw invalidArgument('state', `"${raw}" is not a sandbox state (running, paused)`);
          states.push(...st);
        }
        const metadata: Record<string, string> = {};
        const meta = q.get('metadata');
        if (meta) {
          // The SDK percent-encodes each key and value, then the pairs as a query string.
          for (const [k, v] of new URLSearchParams(meta)) {
            try {
              metadata[decodeURIComponent(k)] = decodeURIComponent(v);
            } catch {
              throw invalidArgument('metadata', `"${k}=${v}" is not a valid percent-encoded pair`);
            }
          }
        }
        const limitRaw = q.get('limit');
        const limit = limitRaw === null ? MAX_LIST : Number(limitRaw);
        if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST)
          throw invalidArgument('limit', `must be an integer from 1 to ${MAX_LIST}`);
        const caller = callerOf(c);
        const page = svc.list(
          {
            states: states.length ? states : [...RUNNING, ...PAUSED],
            metadata,
            ...(caller.admin ? {} : { ownerKeyId: caller.keyId }),
          },
          { limit, cursor: q.get('nextToken') ?? undefined },
        );
        if (page.next) c.res.setHeader('x-next-token', page.next);
        return Promise.resolve(page.items.map(listedBody));
      },
    },
    {
      method: 'GET',
      path: '/sandboxes/:id',
      handler: (c) => Promise.resolve(detailBody(live(svc, c.params['id'] ?? '', callerOf(c)))),
    },
    {
      method: 'DELETE',
      path: '/sandboxes/:id',
      status: 204,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        live(svc, id, callerOf(c));
        await svc.kill(id, { opId: c.opId });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/sandboxes/:id/timeout',
      status: 204,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const t = optInt(await c.body(), 'timeout');
        if (t === undefined) throw invalidArgument('timeout', 'is required (seconds from now)');
        live(svc, id, callerOf(c));
        svc.setTimeout(id, t);
        return null;
      },
    },
    {
      // body {memory}: kiln always keeps memory (a superset of a filesystem-only pause).
      method: 'POST',
      path: '/sandboxes/:id/pause',
      status: 204,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const caller = callerOf(c);
        const s = live(svc, id, caller);
        if (s.state === 'paused' || s.state === 'pausing')
          throw new KilnError('invalid_state', `sandbox ${id} is already paused`);
        await svc.pause(id, { opId: c.opId, caller });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/sandboxes/:id/snapshots',
      status: 201,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const b = await c.body();
        const name = b['name'];
        if (name !== undefined && name !== null && typeof name !== 'string')
          throw invalidArgument('name', `must be a string, got ${JSON.stringify(name)}`);
        const caller = callerOf(c);
        live(svc, id, caller);
        const snap = await svc.snapshot(id, typeof name === 'string' ? { name } : {}, {
          opId: c.opId,
          caller,
        });
        return { snapshotID: snap.id, names: snap.name ? [snap.name] : [] };
      },
    },
    {
      method: 'GET',
      path: '/snapshots',
      handler: (c) => {
        const q = c.query;
        const limitRaw = q.get('limit');
        const limit = limitRaw === null ? MAX_LIST : Number(limitRaw);
        if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST)
          throw invalidArgument('limit', `must be an integer from 1 to ${MAX_LIST}`);
        const token = q.get('nextToken');
        const from = token ? Number(token) : 0;
        if (!Number.isInteger(from) || from < 0)
          throw invalidArgument('nextToken', `"${token ?? ''}" is not a token this server gave out`);
        const sandboxId = q.get('sandboxID') ?? undefined;
        const name = q.get('name');
        const caller = callerOf(c);
        const all = svc
          .listSnapshots({ kind: 'snapshot', ...(sandboxId ? { sandboxId } : {}) })
          .filter((x) => sees(caller, x.ownerKeyId) && (!name || x.name === name));
        const page = all.slice(from, from + limit);
        if (from + limit < all.length) c.res.setHeader('x-next-token', String(from + limit));
        return Promise.resolve(page.map((x) => ({ snapshotID: x.id, names: x.name ? [x.name] : [] })));
      },
    },
    {
      // The SDK deletes snapshots through the templates route; kiln templates are not deleted here.
      method: 'DELETE',
      path: '/templates/:id',
      status: 204,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        let snap;
        try {
          snap = svc.getSnapshot(id);
        } catch (e) {
          // Whatever is not a snapshot here is "not found" (the SDK then answers false).
          if (isKilnError(e) && e.code === 'invalid_argument') throw noSnapshot(id);
          throw e;
        }
        // Another key's snapshot is not found, exactly like one that does not exist.
        if (snap.kind !== 'snapshot' || !sees(callerOf(c), snap.ownerKeyId)) throw noSnapshot(id);
        await svc.deleteSnapshot(snap.id, { opId: c.opId });
        return null;
      },
    },
    {
      method: 'POST',
      path: '/sandboxes/:id/fork',
      status: 201,
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const b = await c.body();
        const count = optInt(b, 'count') ?? 1;
        const timeoutS = optInt(b, 'timeout');
        const caller = callerOf(c);
        live(svc, id, caller);
        const r = await svc.fork(
          id,
          { count, ...(timeoutS === undefined ? {} : { timeoutS }) },
          { opId: c.opId, caller },
        );
        return r.results.map((x) =>
          'sandbox' in x ? { sandbox: sandboxBody(x.sandbox) } : { error: e2bErrorBody(x.error) },
        );
      },
    },
    {
      method: 'GET',
      path: '/sandboxes/:id/metrics',
      handler: async (c) => {
        const id = c.params['id'] ?? '';
        const s = live(svc, id, callerOf(c));
        if (s.state !== 'running') return [];
        const m = await svc.guestMetrics(id, { opId: c.opId }).catch((e: unknown) => {
          // A sandbox that stops between the check and the call simply has no metrics.
          if (isKilnError(e) && e.code === 'invalid_state') return undefined;
          throw e;
        });
        if (!m) return [];
        return [
          {
            timestamp: new Date(m.ts * 1000).toISOString(),
            timestampUnix: m.ts,
            cpuCount: m.cpu_count,
            cpuUsedPct: m.cpu_used_pct,
            memUsed: m.mem_used,
            memTotal: m.mem_total,
            memCache: m.mem_cache,
            diskUsed: m.disk_used,
            diskTotal: m.disk_total,
          },
        ];
      },
    },
  ];
}
