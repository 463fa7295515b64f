/**
 * Template garbage collection's records (issue 14): when each snapshot was last used
 * (`snapshot_uses`), and the removal of an unused hidden template and/or snapshot in one
 * transaction that re-checks, atomically, that nothing depends on it.
 */
import { KilnError } from '../core/errors.ts';
import { str, type Db, type Row } from './sqlite-db.ts';
import { getSnapshot, getTemplate, snapshotDependents } from './sqlite-snapshots.ts';
import type { DropUnused } from './store.ts';

/** Records that the snapshots `ids` were used at `at` (ISO time); a later use is kept; unknown ids are skipped. */
export function touchSnapshots(db: Db, ids: readonly string[], at: string): void {
  if (ids.length === 0) return;
  db.tx(() => {
    for (const id of ids)
      db.q(
        `INSERT INTO snapshot_uses (snapshot_id, used_at) SELECT id, ?2 FROM snapshots WHERE id = ?1
           ON CONFLICT(snapshot_id) DO UPDATE SET used_at = max(used_at, excluded.used_at)`,
      ).run(id, at);
  });
}

/** Snapshot id -> when it was last used (snapshots never touched are absent). */
export function snapshotUses(db: Db): Map<string, string> {
  const rows = db.q('SELECT snapshot_id, used_at FROM snapshot_uses').all() as Row[];
  return new Map(rows.map((r) => [str(r['snapshot_id']), str(r['used_at'])]));
}

const refuse = (what: string, why: string): KilnError =>
  new KilnError('invalid_state', `${what} is not unused any more: ${why}`);

/** The checks of `dropUnused`, inside its transaction. */
function checkUnused(db: Db, o: DropUnused): void {
  if (o.templateId !== null) {
    const t = getTemplate(db, o.templateId);
    if (t.id !== o.templateId || t.snapshotId !== o.snapshotId)
      throw refuse(`template ${o.templateId}`, 'it changed meanwhile');
  } else if (o.snapshotId !== null) {
    const owner = db.q('SELECT name FROM templates WHERE snapshot_id = ?').get(o.snapshotId) as
      Row | undefined;
    if (owner) throw refuse(`snapshot ${o.snapshotId}`, `template "${str(owner['name'])}" points at it`);
  }
  if (o.snapshotId !== null) {
    const s = getSnapshot(db, o.snapshotId);
    if (s.id !== o.snapshotId) throw new KilnError('not_found', `snapshot "${o.snapshotId}" does not exist`);
    const deps = snapshotDependents(db, o.snapshotId);
    if (deps.snapshots.length || deps.sandboxes.length)
      throw refuse(
        `snapshot ${o.snapshotId}`,
        `used by ${[...deps.snapshots, ...deps.sandboxes].join(', ')}`,
      );
  }
}

/**
 * Removes an unused hidden template (`templateId`, with its snapshot `snapshotId`, which must
 * still be its snapshot) and/or a snapshot nobody points at, in one transaction: refused
 * (`invalid_state`) when a sandbox or warm pool member stands on the snapshot, a snapshot is
 * layered on it, or a template points at it. A template that sandbox records (dead ones too)
 * still name stays as `tombstone` with no snapshot; answers whether it did.
 */
export function dropUnused(db: Db, o: DropUnused): { tombstoned: boolean } {
  return db.tx(() => {
    checkUnused(db, o);
    let tombstoned = false;
    if (o.templateId !== null) {
      const named = db.q('SELECT 1 FROM sandboxes WHERE template_id = ? LIMIT 1').get(o.templateId);
      if (named && o.tombstone === null)
        throw refuse(`template ${o.templateId}`, 'sandbox records still name it');
      if (named) {
        db.q('UPDATE templates SET snapshot_id = NULL, name = ? WHERE id = ?').run(o.tombstone, o.templateId);
        db.q('DELETE FROM template_pools WHERE template_id = ?').run(o.templateId);
        tombstoned = true;
      } else {
        db.q('DELETE FROM templates WHERE id = ?').run(o.templateId);
      }
    }
    if (o.snapshotId !== null) {
      // Dead sandboxes keep their history but no longer pin the layer.
      db.q('UPDATE sandboxes SET source_snapshot_id = NULL WHERE source_snapshot_id = ?').run(o.snapshotId);
      db.q('DELETE FROM snapshots WHERE id = ?').run(o.snapshotId);
    }
    return { tombstoned };
  });
}
