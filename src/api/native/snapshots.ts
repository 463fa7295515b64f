/** /v1/snapshots (list, get, delete, restore, export, import) and POST /v1/sandboxes/:id/snapshots. */
import { PassThrough } from 'node:stream';
import type { SnapshotView } from '../../core/api-types.ts';
import type { SnapshotKind } from '../../core/domain.ts';
import { invalidArgument } from '../../core/errors.ts';
import { clientGone, type Ctx, type Route } from '../http.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';
import { createOpts } from './sandboxes.ts';
import { sandboxView, snapshotView } from './views.ts';

const KINDS: SnapshotKind[] = ['template', 'snapshot', 'pause', 'fork'];

async function take(d: NativeDeps, c: Ctx): Promise<SnapshotView> {
  const name = (await fields(c)).string('name');
  return snapshotView(await d.svc.snapshot(idOf(c), name === undefined ? {} : { name }, { opId: c.opId }));
}

function list(d: NativeDeps, c: Ctx): { items: SnapshotView[] } {
  const kind = c.query.get('kind') ?? undefined;
  if (kind !== undefined && !KINDS.includes(kind as SnapshotKind))
    throw invalidArgument('kind', `"${kind}" is not one of ${KINDS.join(', ')}`);
  const sandboxId = c.query.get('sandboxId') ?? undefined;
  const items = d.svc.listSnapshots({
    ...(kind ? { kind: kind as SnapshotKind } : {}),
    ...(sandboxId ? { sandboxId } : {}),
  });
  return { items: items.map(snapshotView) };
}

/** Streams the archive (application/x-tar); errors before the first byte are JSON errors. */
async function exportArchive(d: NativeDeps, c: Ctx): Promise<null> {
  const snap = d.svc.getSnapshot(idOf(c));
  const out = new PassThrough();
  const done = d.svc.exportSnapshot(snap.id, out, { opId: c.opId });
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
}

export const snapshotRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/sandboxes/:id/snapshots', status: 201, handler: (c) => take(d, c) },
  { method: 'GET', path: '/v1/snapshots', handler: (c) => Promise.resolve(list(d, c)) },
  {
    method: 'GET',
    path: '/v1/snapshots/:id',
    handler: (c) => Promise.resolve(snapshotView(d.svc.getSnapshot(idOf(c)))),
  },
  {
    method: 'DELETE',
    path: '/v1/snapshots/:id',
    status: 204,
    handler: async (c) => {
      await d.svc.deleteSnapshot(idOf(c), { opId: c.opId });
      return null;
    },
  },
  {
    method: 'POST',
    path: '/v1/snapshots/:id/restore',
    status: 201,
    handler: async (c) =>
      sandboxView(await d.svc.restore(idOf(c), createOpts(await fields(c)), { opId: c.opId })),
  },
  { method: 'GET', path: '/v1/snapshots/:id/export', handler: (c) => exportArchive(d, c) },
  {
    method: 'POST',
    path: '/v1/snapshots/import',
    status: 201,
    handler: async (c) => snapshotView(await d.svc.importSnapshot(c.req, { opId: c.opId })),
  },
];
