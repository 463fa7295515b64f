/** /v1/volumes: create, list, get and delete volumes (E2B's volumes; see daemon/volumes). */
import type { VolumeRecord } from '../../core/domain.ts';
import type { VolumeView } from '../../core/api-types.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import type { VolumeService } from '../../daemon/volumes/volume-service.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';

const vols = (d: NativeDeps): VolumeService => {
  const v = d.svc.volumes;
  if (!v) throw new KilnError('internal', 'this kilnd was started without volumes');
  return v;
};

const view = (d: NativeDeps, v: VolumeRecord): VolumeView => ({
  id: v.id,
  name: v.name,
  createdAt: v.createdAt,
  mountedBy: vols(d).users(v.id),
});

async function create(d: NativeDeps, c: Ctx): Promise<VolumeView> {
  const name = (await fields(c)).string('name');
  if (name === undefined) throw invalidArgument('name', 'is required (e.g. "data")');
  return view(d, await vols(d).create(name));
}

export const volumeRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/volumes', status: 201, handler: (c) => create(d, c) },
  {
    method: 'GET',
    path: '/v1/volumes',
    handler: () =>
      Promise.resolve({
        items: vols(d)
          .list()
          .map((v) => view(d, v)),
      }),
  },
  { method: 'GET', path: '/v1/volumes/:id', handler: (c) => Promise.resolve(view(d, vols(d).get(idOf(c)))) },
  {
    method: 'DELETE',
    path: '/v1/volumes/:id',
    status: 204,
    handler: async (c) => {
      await vols(d).delete(idOf(c));
      return null;
    },
  },
];
