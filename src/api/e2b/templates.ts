/**
 * E2B's template build API (the `e2b` SDK's `Template.build`): request a build (POST
 * /v3/templates, also /v2/templates), upload links for `copy` contexts (the link points back at
 * this API: PUT /template-files/:token), start it with its steps, poll its status and logs, and
 * list, read, update and delete templates. The builds run in daemon/templates/.
 */
import type { TemplateBuildRecord } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import type { BuildLogEntry } from '../../core/template-steps.ts';
import { validateFilesHash } from '../../core/template-steps.ts';
import type { TemplateBuildService, TemplateView } from '../../daemon/templates/build-service.ts';
import type { Ctx, Route } from '../http.ts';
import { callerOf, fields, type E2bDeps } from './deps.ts';

type E2bTemplateDeps = E2bDeps;

const ENVD_VERSION = '0.6.4';

function builds(d: E2bTemplateDeps): TemplateBuildService {
  if (!d.builds) throw new KilnError('invalid_state', 'template builds are not served by this API instance');
  return d.builds;
}

async function request(d: E2bTemplateDeps, c: Ctx): Promise<unknown> {
  const f = await fields(c);
  const name = f.string('name') ?? f.string('alias');
  if (!name) throw invalidArgument('name', 'a template name is required');
  const tagsRaw = f.raw('tags');
  if (tagsRaw !== undefined && (!Array.isArray(tagsRaw) || tagsRaw.some((t) => typeof t !== 'string')))
    throw invalidArgument('tags', 'must be an array of strings');
  const vcpus = f.int('cpuCount');
  const memoryMiB = f.int('memoryMB');
  const b = builds(d).request(
    name,
    {
      ...(tagsRaw ? { tags: tagsRaw as string[] } : {}),
      ...(vcpus !== undefined ? { vcpus } : {}),
      ...(memoryMiB !== undefined ? { memoryMiB } : {}),
    },
    callerOf(d, c),
  );
  return {
    templateID: b.templateId,
    buildID: b.id,
    names: [b.templateName],
    aliases: [b.templateName],
    tags: b.tags,
    public: false,
  };
}

/** Where the SDK uploads a `copy` context: this API, on the host and port it was asked on. */
async function fileLink(d: E2bTemplateDeps, c: Ctx): Promise<unknown> {
  const templateId = c.params['templateID'] ?? '';
  const hash = validateFilesHash(c.params['hash']);
  builds(d).get(templateId, callerOf(d, c));
  const svc = builds(d).files;
  if (await svc.present(hash)) return { present: true };
  const host = c.req.headers.host ?? '127.0.0.1';
  return { present: false, url: `http://${host}/template-files/${svc.link(hash)}` };
}

async function upload(d: E2bTemplateDeps, c: Ctx): Promise<null> {
  await builds(d).files.receive(c.params['token'] ?? '', c.req);
  return null;
}

async function start(d: E2bTemplateDeps, c: Ctx): Promise<null> {
  builds(d).start(c.params['templateID'] ?? '', c.params['buildID'] ?? '', await c.body(), callerOf(d, c));
  return null;
}

const entryView = (e: BuildLogEntry): BuildLogEntry => e;

function status(d: E2bTemplateDeps, c: Ctx): unknown {
  const { build, logs, tail } = builds(d).status(
    c.params['templateID'] ?? '',
    c.params['buildID'] ?? '',
    c.query.get('logsOffset') ?? undefined,
    callerOf(d, c),
  );
  return {
    templateID: build.templateId,
    buildID: build.id,
    status: build.status,
    logEntries: logs.map(entryView),
    logs: logs.map((e) => `[${e.timestamp}] ${e.message}`),
    ...(build.reason
      ? {
          reason: { message: build.reason.message, step: build.reason.step, logEntries: tail.map(entryView) },
        }
      : {}),
  };
}

const last = (v: TemplateView): TemplateBuildRecord | undefined => v.builds.at(-1);
const lastReady = (v: TemplateView): TemplateBuildRecord | undefined =>
  [...v.builds].reverse().find((b) => b.status === 'ready');

function buildView(v: TemplateView, b: TemplateBuildRecord): unknown {
  return {
    buildID: b.id,
    status: b.status,
    cpuCount: b.vcpus ?? v.template?.vcpus ?? 1,
    memoryMB: b.memoryMiB ?? v.template?.memoryMiB ?? 256,
    createdAt: b.createdAt,
    updatedAt: b.updatedAt,
    ...(b.finishedAt ? { finishedAt: b.finishedAt } : {}),
    envdVersion: ENVD_VERSION,
  };
}

/** E2B's `Template`. */
function templateView(v: TemplateView): Record<string, unknown> {
  const t = v.template;
  const b = lastReady(v) ?? last(v);
  return {
    templateID: v.templateId,
    buildID: b?.id ?? v.templateId,
    cpuCount: t?.vcpus ?? b?.vcpus ?? 1,
    memoryMB: t?.memoryMiB ?? b?.memoryMiB ?? 256,
    diskSizeMB: 0,
    public: v.ownerKeyId === null,
    aliases: [v.name],
    names: [v.name],
    createdAt: t?.createdAt ?? v.builds[0]?.createdAt ?? new Date(0).toISOString(),
    updatedAt: b?.updatedAt ?? t?.createdAt ?? new Date(0).toISOString(),
    createdBy: null,
    lastSpawnedAt: null,
    spawnCount: 0,
    buildCount: v.builds.length,
    envdVersion: ENVD_VERSION,
    buildStatus: last(v)?.status ?? (t?.snapshotId ? 'ready' : 'error'),
  };
}

/** The fields of `Template` that `TemplateWithBuilds` carries too. */
const WITH_BUILDS_KEYS = [
  'templateID',
  'public',
  'aliases',
  'names',
  'createdAt',
  'updatedAt',
  'lastSpawnedAt',
  'spawnCount',
];

function withBuilds(v: TemplateView): unknown {
  const t = templateView(v);
  return {
    ...Object.fromEntries(WITH_BUILDS_KEYS.map((k) => [k, t[k]])),
    builds: v.builds.map((b) => buildView(v, b)),
  };
}

async function update(d: E2bTemplateDeps, c: Ctx): Promise<unknown> {
  const v = builds(d).get(c.params['id'] ?? '', callerOf(d, c));
  const f = await fields(c);
  if (f.bool('public') === true && v.ownerKeyId !== null)
    throw invalidArgument(
      'public',
      "kiln templates of an API key are that key's own; kiln has no public templates of keys",
    );
  return { names: [v.name] };
}

async function assignTags(d: E2bTemplateDeps, c: Ctx): Promise<unknown> {
  const f = await fields(c);
  const target = f.string('target');
  if (!target) throw invalidArgument('target', 'a "name:tag" target is required');
  const b = builds(d).assignTags(target, stringList(f.raw('tags'), 'tags'), callerOf(d, c));
  return { buildID: b.id, tags: b.tags };
}

async function removeTags(d: E2bTemplateDeps, c: Ctx): Promise<null> {
  const f = await fields(c);
  const name = f.string('name');
  if (!name) throw invalidArgument('name', 'a template name is required');
  builds(d).removeTags(name, stringList(f.raw('tags'), 'tags'), callerOf(d, c));
  return null;
}

function stringList(v: unknown, field: string): string[] {
  if (!Array.isArray(v) || v.some((t) => typeof t !== 'string'))
    throw invalidArgument(field, 'must be an array of strings');
  return v as string[];
}

function tagsOf(d: E2bTemplateDeps, c: Ctx): unknown {
  const v = builds(d).get(c.params['templateID'] ?? '', callerOf(d, c));
  return v.builds.flatMap((b) => b.tags.map((tag) => ({ tag, buildID: b.id, createdAt: b.updatedAt })));
}

function buildLogs(d: E2bTemplateDeps, c: Ctx): unknown {
  const cursor = Number(c.query.get('cursor') ?? '0');
  const limit = Math.min(Number(c.query.get('limit') ?? '100'), 1000);
  if (!Number.isInteger(cursor) || cursor < 0)
    throw invalidArgument('cursor', 'must be a non-negative integer');
  if (!Number.isInteger(limit) || limit < 1) throw invalidArgument('limit', 'must be a positive integer');
  return {
    logs: builds(d).logs(
      c.params['templateID'] ?? '',
      c.params['buildID'] ?? '',
      cursor,
      limit,
      callerOf(d, c),
    ),
  };
}

export const templateRoutes = (d: E2bTemplateDeps): Route[] => [
  { method: 'POST', path: '/templates/tags', status: 201, handler: (c) => assignTags(d, c) },
  { method: 'DELETE', path: '/templates/tags', status: 204, handler: (c) => removeTags(d, c) },
  { method: 'GET', path: '/templates/:templateID/tags', handler: (c) => Promise.resolve(tagsOf(d, c)) },
  {
    method: 'GET',
    path: '/templates/:templateID/builds/:buildID/logs',
    handler: (c) => Promise.resolve(buildLogs(d, c)),
  },
  {
    method: 'GET',
    path: '/v2/templates',
    handler: (c) => Promise.resolve(builds(d).list(callerOf(d, c)).map(templateView)),
  },
  { method: 'POST', path: '/v3/templates', status: 202, handler: (c) => request(d, c) },
  { method: 'POST', path: '/v2/templates', status: 202, handler: (c) => request(d, c) },
  { method: 'GET', path: '/templates/:templateID/files/:hash', handler: (c) => fileLink(d, c) },
  { method: 'PUT', path: '/template-files/:token', handler: (c) => upload(d, c) },
  {
    method: 'POST',
    path: '/v2/templates/:templateID/builds/:buildID',
    status: 202,
    handler: (c) => start(d, c),
  },
  {
    method: 'GET',
    path: '/templates/:templateID/builds/:buildID/status',
    handler: (c) => Promise.resolve(status(d, c)),
  },
  {
    method: 'GET',
    path: '/templates',
    handler: (c) => Promise.resolve(builds(d).list(callerOf(d, c)).map(templateView)),
  },
  {
    method: 'GET',
    path: '/templates/:id',
    handler: (c) => Promise.resolve(withBuilds(builds(d).get(c.params['id'] ?? '', callerOf(d, c)))),
  },
  { method: 'PATCH', path: '/templates/:id', handler: (c) => update(d, c) },
  { method: 'PATCH', path: '/v2/templates/:id', handler: (c) => update(d, c) },
];

/** DELETE /templates/:id for a built template (snapshots go through the same route: snapshots.ts). */
export async function deleteBuiltTemplate(d: E2bTemplateDeps, c: Ctx, id: string): Promise<boolean> {
  if (!d.builds) return false;
  let v: TemplateView;
  try {
    v = d.builds.get(id, callerOf(d, c));
  } catch (e) {
    if (e instanceof KilnError && (e.code === 'not_found' || e.code === 'invalid_argument')) return false;
    throw e;
  }
  if (v.builds.length === 0) return false;
  await d.builds.delete(v.templateId, callerOf(d, c), c.opId);
  return true;
}
