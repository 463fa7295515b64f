/**
 * E2B's volumes: `/volumes` (create, list) and `/volumes/{volumeID}` (get, delete) with the API
 * key, and the volume content API `/volumecontent/{volumeID}/{dir,path,file}` authorised by the
 * volume's own token (`Authorization: Bearer <token>`; the SDK sends it to `E2B_VOLUME_API_URL`,
 * which is this API's URL).
 */
import type { VolumeRecord } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import * as content from '../../daemon/volumes/content.ts';
import type { VolumeService } from '../../daemon/volumes/volume-service.ts';
import type { Ctx, Route } from '../http.ts';
import { callerOf, fields, type E2bDeps } from './deps.ts';

const vols = (d: E2bDeps): VolumeService => {
  const v = d.svc.volumes;
  if (!v) throw new KilnError('internal', 'this kilnd was started without volumes');
  return v;
};

const withToken = (v: VolumeRecord): { volumeID: string; name: string; token: string } => ({
  volumeID: v.id,
  name: v.name,
  token: v.token,
});

async function create(d: E2bDeps, c: Ctx): Promise<unknown> {
  const name = (await fields(c)).string('name');
  if (name === undefined) throw invalidArgument('name', 'is required');
  return withToken(await vols(d).create(name, callerOf(d, c)));
}

const volumeRoutes = (d: E2bDeps): Route[] => [
  { method: 'POST', path: '/volumes', status: 201, handler: (c) => create(d, c) },
  {
    method: 'GET',
    path: '/volumes',
    handler: (c) =>
      Promise.resolve(
        vols(d)
          .list(callerOf(d, c))
          .map((v) => ({ volumeID: v.id, name: v.name })),
      ),
  },
  {
    method: 'GET',
    path: '/volumes/:id',
    handler: (c) => Promise.resolve(withToken(vols(d).get(c.params['id'] ?? '', callerOf(d, c)))),
  },
  {
    method: 'DELETE',
    path: '/volumes/:id',
    status: 204,
    handler: async (c) => {
      await vols(d).delete(c.params['id'] ?? '', callerOf(d, c));
      return null;
    },
  },
];

/** The volume a content request names, if its bearer token is that volume's. */
async function rootOf(d: E2bDeps, c: Ctx): Promise<content.VolumeRoot> {
  const auth = c.req.headers.authorization;
  const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
  const v = vols(d).byToken(c.params['id'] ?? '', token);
  return vols(d).root(v);
}

/** The `path` query parameter (required). */
function pathOf(c: Ctx): string {
  const p = c.query.get('path');
  if (p === null) throw invalidArgument('path', 'is required (a path in the volume, e.g. /data/a.txt)');
  return p;
}

function intParam(c: Ctx, name: string): number | undefined {
  const v = c.query.get(name);
  if (v === null || v === '') return undefined;
  if (!/^\d+$/.test(v)) throw invalidArgument(name, `"${v}" is not a non-negative integer`);
  return Number(v);
}

const attrsOf = (c: Ctx): content.EntryAttrs & { force: boolean } => ({
  uid: intParam(c, 'uid'),
  gid: intParam(c, 'gid'),
  mode: intParam(c, 'mode'),
  force: c.query.get('force') === 'true',
});

function bodyAttrs(f: Awaited<ReturnType<typeof fields>>): content.EntryAttrs {
  return { uid: f.int('uid'), gid: f.int('gid'), mode: f.int('mode') };
}

async function readFile(d: E2bDeps, c: Ctx): Promise<null> {
  const { size, stream } = await content.readFileStream(await rootOf(d, c), pathOf(c));
  c.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
  await new Promise<void>((res, rej) => {
    stream.on('error', rej);
    c.res.on('finish', res);
    c.res.on('close', res);
    stream.pipe(c.res);
  });
  return null;
}

const contentRoutes = (d: E2bDeps): Route[] => [
  {
    method: 'GET',
    path: '/volumecontent/:id/dir',
    handler: async (c) => content.listDir(await rootOf(d, c), pathOf(c), intParam(c, 'depth') ?? 1),
  },
  {
    method: 'POST',
    path: '/volumecontent/:id/dir',
    status: 201,
    handler: async (c) => content.makeDir(await rootOf(d, c), pathOf(c), attrsOf(c)),
  },
  {
    method: 'GET',
    path: '/volumecontent/:id/path',
    handler: async (c) => content.statPath(await rootOf(d, c), pathOf(c)),
  },
  {
    method: 'PATCH',
    path: '/volumecontent/:id/path',
    handler: async (c) => content.updatePath(await rootOf(d, c), pathOf(c), bodyAttrs(await fields(c))),
  },
  {
    method: 'DELETE',
    path: '/volumecontent/:id/path',
    status: 204,
    handler: async (c) => {
      await content.removePath(await rootOf(d, c), pathOf(c));
      return null;
    },
  },
  { method: 'GET', path: '/volumecontent/:id/file', handler: (c) => readFile(d, c) },
  {
    method: 'PUT',
    path: '/volumecontent/:id/file',
    handler: async (c) => content.writeFileFrom(await rootOf(d, c), pathOf(c), c.req, attrsOf(c)),
  },
];

export const volumesRoutes = (d: E2bDeps): Route[] => [...volumeRoutes(d), ...contentRoutes(d)];
