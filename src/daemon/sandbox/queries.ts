import { isInternalSnapshotName } from '../../core/template-steps.ts';
import type {
  EventRecord,
  SandboxRecord,
  SnapshotKind,
  SnapshotRecord,
  TemplateRecord,
} from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { validateName } from '../../core/validate.ts';
import type { Page, PageOpts, SandboxFilter } from '../../store/store.ts';
import { diskLayer, type ServiceContext } from './context.ts';

/** Reads of sandboxes, snapshots and templates, as the API shows them. */

/** A running sandbox's condition as the liveness watcher sees it now (the store may lag). */
function live(sc: ServiceContext, s: SandboxRecord): SandboxRecord {
  if (s.state !== 'running') return s;
  const condition = sc.watcher.conditionOf(s);
  return condition === s.condition ? s : { ...s, condition };
}

export function getSandbox(sc: ServiceContext, id: string): SandboxRecord {
  validateName('sandboxId', id);
  return live(sc, sc.store.getSandbox(id));
}

export function listSandboxes(
  sc: ServiceContext,
  filter: SandboxFilter,
  page?: PageOpts,
): Page<SandboxRecord> {
  const p = sc.store.listSandboxes(filter, page);
  return { ...p, items: p.items.map((s) => live(sc, s)) };
}

export function sandboxLogs(sc: ServiceContext, id: string, page?: PageOpts): Page<EventRecord> {
  getSandbox(sc, id);
  return sc.store.listEvents(id, page);
}

/** A snapshot as users see it: a deleted one (a layer kept for others) is `not_found`. */
export function getSnapshot(sc: ServiceContext, idOrName: string): SnapshotRecord {
  validateName('snapshot', idOrName);
  const snap = sc.store.getSnapshot(idOrName);
  if (snap.deletedAt !== null)
    throw new KilnError('not_found', `snapshot "${idOrName}" does not exist`, {
      details: { snapshotId: idOrName },
    });
  return snap;
}

/** The snapshots users see (deleted ones are not). */
export function listSnapshots(
  sc: ServiceContext,
  filter: { sandboxId?: string; kind?: SnapshotKind },
): SnapshotRecord[] {
  return sc.store
    .listSnapshots({ deleted: false, ...(filter.sandboxId ? { sandboxId: filter.sandboxId } : {}) })
    .filter((x) => (!filter.kind || x.kind === filter.kind) && !isInternalSnapshotName(x.name));
}

/**
 * True when sandboxes can be made from the template: it has a snapshot whose agent holds a
 * bootstrap token (one built by an older kiln has none and must be rebuilt).
 */
export function templateReady(sc: ServiceContext, t: TemplateRecord): boolean {
  if (!t.snapshotId) return false;
  try {
    return sc.store.getSnapshot(t.snapshotId).guestToken !== null;
  } catch (e) {
    if (e instanceof KilnError && e.code === 'not_found') return false;
    throw e;
  }
}

/** The size of a sandbox's disk as its guest sees it (MiB; the most its overlay can hold), if known. */
export function diskSizeMiB(sc: ServiceContext, s: SandboxRecord): number | undefined {
  if (!sc.disk || !s.sourceSnapshotId) return undefined;
  try {
    return Math.round(sc.disk.diskBytes(diskLayer(sc, s.sourceSnapshotId)) / 2 ** 20);
  } catch {
    return undefined;
  }
}

/** `already_exists` when `name` is taken by a snapshot or a template (they share one namespace). */
export function assertSnapshotNameFree(sc: ServiceContext, name: string): void {
  const taken = (() => {
    try {
      sc.store.getSnapshot(name);
      return true;
    } catch {
      return false;
    }
  })();
  if (taken) throw new KilnError('already_exists', `a snapshot named "${name}" already exists`);
  // Names share one namespace with templates (both are what a create restores).
  if (sc.store.listTemplates().some((t) => t.name === name || t.id === name))
    throw new KilnError('already_exists', `"${name}" is a template's name; pick another snapshot name`);
}
