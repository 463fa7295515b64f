/**
 * /v1/template-builds and /v1/template-files: template builds from a step list (what `kiln
 * template build -f Dockerfile` sends, E2B's TemplateBuildStartV2 shape plus name and resources),
 * their status and logs (`?logsOffset=`), the build context uploads; /v1/templates/{id} read and
 * delete; /v1/templates/gc (template garbage collection).
 */
import type { TemplateBuildRecord } from '../../core/domain.ts';
import type { TemplateGcView } from '../../core/api-types.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { parseLogsOffset, validateFilesHash, type BuildLogEntry } from '../../core/template-steps.ts';
import { validateInt } from '../../core/validate.ts';
import type { TemplateBuildService, TemplateView } from '../../daemon/templates/build-service.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';

/** The longest grace period a pass may name: a year. */
const MAX_GRACE_S = 366 * 24 * 3600;

function builds(d: NativeDeps): TemplateBuildService {
  if (!d.builds) throw new KilnError('invalid_state', 'template builds are not served by this API instance');
  return d.builds;
}

const buildView = (b: TemplateBuildRecord) => ({
  id: b.id,
  templateId: b.templateId,
  name: b.templateName,
  status: b.status,
  reason: b.reason,
  snapshotId: b.snapshotId,
  createdAt: b.createdAt,
  finishedAt: b.finishedAt,
});

async function start(d: NativeDeps, c: Ctx): Promise<unknown> {
  const body = await c.body();
  const f = await fields(c);
  const name = f.string('name');
  if (!name) throw invalidArgument('name', 'a template name is required');
  const vcpus = f.int('vcpus');
  const memoryMiB = f.int('memoryMiB');
  const spec = Object.fromEntries(
    Object.entries(body).filter(([k]) => k !== 'name' && k !== 'vcpus' && k !== 'memoryMiB'),
  );
  const b = builds(d).request(
    name,
    { ...(vcpus !== undefined ? { vcpus } : {}), ...(memoryMiB !== undefined ? { memoryMiB } : {}) },
    undefined,
  );
  builds(d).start(b.templateId, b.id, spec, undefined);
  return buildView(builds(d).buildById(b.id, undefined));
}

function status(d: NativeDeps, c: Ctx): unknown {
  const b = builds(d).buildById(idOf(c), undefined);
  const logs: BuildLogEntry[] = builds(d).logs(
    b.templateId,
    b.id,
    parseLogsOffset(c.query.get('logsOffset') ?? undefined),
    1000,
    undefined,
  );
  return { ...buildView(b), logs };
}

/** POST /v1/templates/gc: one template garbage collection pass (or a dry run of one). */
async function collect(d: NativeDeps, c: Ctx): Promise<TemplateGcView> {
  const f = await fields(c);
  const graceS = f.int('graceS');
  if (graceS !== undefined) validateInt('graceS', graceS, 0, MAX_GRACE_S);
  return builds(d).gc.collect({
    dryRun: f.bool('dryRun') === true,
    ...(graceS !== undefined ? { graceMs: graceS * 1000 } : {}),
    opId: c.opId,
  });
}

const templateView = (v: TemplateView) => ({
  id: v.templateId,
  name: v.name,
  snapshotId: v.template?.snapshotId ?? null,
  memoryMiB: v.template?.memoryMiB ?? null,
  vcpus: v.template?.vcpus ?? null,
  builds: v.builds.map(buildView),
});

export const templateBuildRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/template-builds', status: 201, handler: (c) => start(d, c) },
  { method: 'GET', path: '/v1/template-builds/:id', handler: (c) => Promise.resolve(status(d, c)) },
  {
    method: 'POST',
    path: '/v1/template-builds/:id/cancel',
    handler: async (c) => buildView(await builds(d).cancel(idOf(c), undefined)),
  },
  {
    method: 'GET',
    path: '/v1/template-files/:hash',
    handler: async (c) => ({ present: await builds(d).files.present(validateFilesHash(c.params['hash'])) }),
  },
  {
    method: 'PUT',
    path: '/v1/template-files/:hash',
    status: 204,
    handler: async (c) => {
      await builds(d).files.store(validateFilesHash(c.params['hash']), c.req);
      return null;
    },
  },
  { method: 'POST', path: '/v1/templates/gc', handler: (c) => collect(d, c) },
  {
    method: 'GET',
    path: '/v1/templates/:id',
    handler: (c) => Promise.resolve(templateView(builds(d).get(idOf(c), undefined))),
  },
  {
    method: 'DELETE',
    path: '/v1/templates/:id',
    status: 204,
    handler: async (c) => {
      await builds(d).delete(idOf(c), undefined, c.opId);
      return null;
    },
  },
];
