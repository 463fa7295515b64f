/** The warm pool's tables: `template_pools` (sizes set per template) and `pool_vms` (members). */
import type { PoolVmRecord } from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { num, str, type Db, type Row } from './sqlite-db.ts';

function poolVmRow(r: Row): PoolVmRecord {
  return {
    id: str(r['id']),
    templateId: str(r['template_id']),
    snapshotId: str(r['snapshot_id']),
    memoryMiB: num(r['memory_mib']),
    state: str(r['state']) === 'ready' ? 'ready' : 'starting',
    createdAt: str(r['created_at']),
  };
}

/** Sets (size >= 0) or clears (`null`: back to the default) template `templateId`'s pool size. */
export function setPoolSize(db: Db, templateId: string, size: number | null): void {
  if (size === null) {
    db.q('DELETE FROM template_pools WHERE template_id = ?').run(templateId);
    return;
  }
  db.q(
    'INSERT INTO template_pools (template_id, size) VALUES (?, ?) ON CONFLICT(template_id) DO UPDATE SET size = excluded.size',
  ).run(templateId, size);
}

/** Template id -> the pool size set for it. */
export function poolSizes(db: Db): Map<string, number> {
  const rows = db.q('SELECT template_id, size FROM template_pools').all() as Row[];
  return new Map(rows.map((r) => [str(r['template_id']), num(r['size'])]));
}

export function insertPoolVm(db: Db, v: PoolVmRecord): void {
  db.q(
    'INSERT INTO pool_vms (id, template_id, snapshot_id, memory_mib, state, created_at) VALUES (?, ?, ?, ?, ?, ?)',
  ).run(v.id, v.templateId, v.snapshotId, v.memoryMiB, v.state, v.createdAt);
}

export function markPoolVmReady(db: Db, id: string): void {
  if (db.q(`UPDATE pool_vms SET state = 'ready' WHERE id = ?`).run(id).changes === 0)
    throw new KilnError('not_found', `warm pool member ${id} does not exist`);
}

/** Every member, oldest first. */
export function listPoolVms(db: Db): PoolVmRecord[] {
  return (db.q('SELECT * FROM pool_vms ORDER BY created_at, id').all() as Row[]).map(poolVmRow);
}

/** Removes a member's record; false when there was none (another path removed it first). */
export function deletePoolVm(db: Db, id: string): boolean {
  return db.q('DELETE FROM pool_vms WHERE id = ?').run(id).changes > 0;
}

/**
 * Takes the oldest ready member restored from `snapshotId` out of the pool, in one statement (two
 * creates never take the same one); `undefined` when there is none.
 */
export function takePoolVm(db: Db, snapshotId: string): PoolVmRecord | undefined {
  const r = db
    .q(
      `DELETE FROM pool_vms WHERE id = (SELECT id FROM pool_vms WHERE snapshot_id = ? AND state = 'ready'
         ORDER BY created_at, id LIMIT 1) RETURNING *`,
    )
    .get(snapshotId) as Row | undefined;
  return r ? poolVmRow(r) : undefined;
}
