/**
 * The dashboard's other pages: host, session, templates (with their build logs' live streams),
 * images, snapshots, API keys.
 */
import type {
  DashHost,
  DashImage,
  DashKey,
  DashSession,
  DashSnapshot,
  DashTemplate,
} from '../../core/dashboard-types.ts';
import { KilnError } from '../../core/errors.ts';
import { MAX_FORK } from '../../daemon/sandbox-service.ts';
import { sees } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { streamBuildLog } from './build-log-stream.ts';
import { callerOf, fields, idOf, needAdmin, opCtx, sessionOf, type DashboardDeps } from './deps.ts';
import { keyView, snapshotView, templateView } from './views.ts';

function session(d: DashboardDeps, c: Ctx): DashSession {
  const s = sessionOf(c);
  return {
    label: s.label,
    admin: !s.caller || s.caller.admin,
    csrf: s.csrf,
    version: d.version,
    forkMax: MAX_FORK,
  };
}

function templates(d: DashboardDeps, c: Ctx): DashTemplate[] {
  const caller = callerOf(c);
  if (d.builds) return d.builds.list(caller).map((t) => templateView(d.svc, t));
  return d.svc
    .templates()
    .filter((t) => !t.name.startsWith('kiln-') && (t.ownerKeyId === null || sees(caller, t.ownerKeyId)))
    .map((t) =>
      templateView(d.svc, {
        templateId: t.id,
        name: t.name,
        ownerKeyId: t.ownerKeyId,
        template: t,
        builds: [],
      }),
    );
}

/** A user snapshot the session sees, else `not_found`. */
function visibleSnapshot(d: DashboardDeps, c: Ctx): DashSnapshot {
  const s = d.svc.getSnapshot(idOf(c));
  if (s.kind === 'template' || !sees(callerOf(c), s.ownerKeyId))
    throw new KilnError('not_found', `snapshot "${idOf(c)}" does not exist`);
  return snapshotView(s);
}

function snapshots(d: DashboardDeps, c: Ctx): DashSnapshot[] {
  const caller = callerOf(c);
  return d.svc
    .listSnapshots({ kind: 'snapshot' })
    .filter((s) => sees(caller, s.ownerKeyId))
    .map(snapshotView);
}

/** Deletes a snapshot and says what still stands on its layer (kept until they are gone). */
async function deleteSnapshot(
  d: DashboardDeps,
  c: Ctx,
): Promise<{ deleted: string; layerKeptFor: { sandboxes: string[]; snapshots: string[] } }> {
  const snap = visibleSnapshot(d, c);
  const sandboxes = d.svc
    .list({ states: ['creating', 'running', 'pausing', 'paused', 'resuming'] }, { limit: 1000 })
    .items.filter((s) => s.sourceSnapshotId === snap.id)
    .map((s) => s.id);
  const children = d.svc
    .listSnapshots()
    .filter((s) => {
      try {
        return d.svc.getSnapshot(s.id).parentId === snap.id;
      } catch {
        return false;
      }
    })
    .map((s) => s.id);
  await d.svc.deleteSnapshot(snap.id, opCtx(c));
  return { deleted: snap.id, layerKeptFor: { sandboxes, snapshots: children } };
}

async function exportSnapshot(d: DashboardDeps, c: Ctx): Promise<null> {
  const snap = visibleSnapshot(d, c);
  c.res.writeHead(200, {
    'content-type': 'application/x-tar',
    'content-disposition': `attachment; filename="${snap.id}.tar"`,
  });
  await d.svc.exportSnapshot(snap.id, c.res, opCtx(c));
  c.res.end();
  return null;
}

async function restore(d: DashboardDeps, c: Ctx): Promise<{ sandboxId: string }> {
  const snap = visibleSnapshot(d, c);
  const s = await d.svc.restore(snap.id, {}, opCtx(c));
  return { sandboxId: s.id };
}

function keys(d: DashboardDeps, c: Ctx): DashKey[] {
  needAdmin(c, 'listing API keys');
  return d.keys.list().map(keyView);
}

async function createKey(d: DashboardDeps, c: Ctx): Promise<DashKey & { key: string }> {
  needAdmin(c, 'creating API keys');
  const f = await fields(c);
  const { record, key } = d.keys.create(f.string('name') ?? 'dashboard', { admin: f.bool('admin') ?? false });
  return { ...keyView(record), key };
}

function revokeKey(d: DashboardDeps, c: Ctx): null {
  needAdmin(c, 'revoking API keys');
  d.keys.delete(idOf(c));
  d.sessions.dropKey(idOf(c));
  return null;
}

export const objectRoutes = (d: DashboardDeps): Route[] => [
  { method: 'GET', path: '/api/session', handler: (c) => Promise.resolve(session(d, c)) },
  { method: 'GET', path: '/api/host', handler: (): Promise<DashHost> => d.host.read() },
  { method: 'GET', path: '/api/templates', handler: (c) => Promise.resolve(templates(d, c)) },
  { method: 'GET', path: '/api/templates/:id/builds/:bid/log', handler: (c) => streamBuildLog(d, c) },
  { method: 'GET', path: '/api/images', handler: (c): Promise<DashImage[]> => d.images.list(callerOf(c)) },
  { method: 'GET', path: '/api/snapshots', handler: (c) => Promise.resolve(snapshots(d, c)) },
  { method: 'DELETE', path: '/api/snapshots/:id', handler: (c) => deleteSnapshot(d, c) },
  { method: 'GET', path: '/api/snapshots/:id/export', handler: (c) => exportSnapshot(d, c) },
  { method: 'POST', path: '/api/snapshots/:id/restore', status: 201, handler: (c) => restore(d, c) },
  { method: 'GET', path: '/api/keys', handler: (c) => Promise.resolve(keys(d, c)) },
  { method: 'POST', path: '/api/keys', status: 201, handler: (c) => createKey(d, c) },
  { method: 'DELETE', path: '/api/keys/:id', status: 204, handler: (c) => Promise.resolve(revokeKey(d, c)) },
];
