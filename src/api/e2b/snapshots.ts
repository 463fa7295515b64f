/**
 * E2B's snapshot routes: take one, list them, and delete one (the SDK deletes snapshots through
 * the templates route; kiln templates are not deleted there).
 */
import { isKilnError } from '../../core/errors.ts';
import { sees } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { queryLimit } from '../parse.ts';
import { MAX_LIST, callerOf, fields, idOf, live, noSnapshot, type E2bDeps } from './deps.ts';
import { invalidArgument } from '../../core/errors.ts';
import { deleteBuiltTemplate } from './templates.ts';

/** `SnapshotInfo`. */
interface E2bSnapshot {
  snapshotID: string;
  names: string[];
}

const view = (x: { id: string; name: string | null }): E2bSnapshot => ({
  snapshotID: x.id,
  names: x.name ? [x.name] : [],
});

async function take(d: E2bDeps, c: Ctx): Promise<E2bSnapshot> {
  const id = idOf(c);
  const name = (await fields(c)).string('name');
  const caller = callerOf(d, c);
  live(d.svc, id, caller);
  return view(await d.svc.snapshot(id, name === undefined ? {} : { name }, { opId: c.opId, caller }));
}

function list(d: E2bDeps, c: Ctx): E2bSnapshot[] {
  const q = c.query;
  const limit = queryLimit(q, MAX_LIST, MAX_LIST);
  const token = q.get('nextToken');
  const from = token ? Number(token) : 0;
  if (!Number.isInteger(from) || from < 0)
    throw invalidArgument('nextToken', `"${token ?? ''}" is not a token this server gave out`);
  const sandboxId = q.get('sandboxID') ?? undefined;
  const name = q.get('name');
  const caller = callerOf(d, c);
  const all = d.svc
    .listSnapshots({ kind: 'snapshot', ...(sandboxId ? { sandboxId } : {}) })
    .filter((x) => sees(caller, x.ownerKeyId) && (!name || x.name === name));
  if (from + limit < all.length) c.res.setHeader('x-next-token', String(from + limit));
  return all.slice(from, from + limit).map(view);
}

async function remove(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  // A template built by the template API (its snapshot and layers go with it).
  if (await deleteBuiltTemplate(d, c, id)) return null;
  let snap;
  try {
    snap = d.svc.getSnapshot(id);
  } catch (e) {
    // Whatever is not a snapshot here is "not found" (the SDK then answers false).
    if (isKilnError(e) && e.code === 'invalid_argument') throw noSnapshot(id);
    throw e;
  }
  // Another key's snapshot is not found, exactly like one that does not exist.
  if (snap.kind !== 'snapshot' || !sees(callerOf(d, c), snap.ownerKeyId)) throw noSnapshot(id);
  await d.svc.deleteSnapshot(snap.id, { opId: c.opId });
  return null;
}

export const snapshotRoutes = (d: E2bDeps): Route[] => [
  { method: 'POST', path: '/sandboxes/:id/snapshots', status: 201, handler: (c) => take(d, c) },
  { method: 'GET', path: '/snapshots', handler: (c) => Promise.resolve(list(d, c)) },
  { method: 'DELETE', path: '/templates/:id', status: 204, handler: (c) => remove(d, c) },
];
