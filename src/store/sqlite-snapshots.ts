/** The `templates` and `snapshots` tables: records, names, and the layers that pin a snapshot. */
import type { SnapshotRecord, TemplateRecord } from '../core/domain.ts';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { insertUnique, isConstraint, num, optStr, str, type Db, type Row } from './sqlite-db.ts';
import type { SnapshotFilter } from './store.ts';

export function putTemplate(db: Db, t: TemplateRecord): void {
  insertUnique(
    db,
    `INSERT INTO templates (id, name, image_key, memory_mib, vcpus, snapshot_id, created_at, owner_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET name = excluded.name, image_key = excluded.image_key, memory_mib = excluded.memory_mib,
         vcpus = excluded.vcpus, snapshot_id = excluded.snapshot_id`,
    [t.id, t.name, t.imageKey, t.memoryMiB, t.vcpus, t.snapshotId, t.createdAt, t.ownerKeyId],
    () => `a template named "${t.name}" already exists`,
  );
}

function templateRow(r: Row): TemplateRecord {
  return {
    id: str(r['id']),
    name: str(r['name']),
    imageKey: str(r['image_key']),
    memoryMiB: num(r['memory_mib']),
    vcpus: num(r['vcpus']),
    snapshotId: optStr(r['snapshot_id']),
    createdAt: str(r['created_at']),
    ownerKeyId: optStr(r['owner_key_id']),
  };
}

export function getTemplate(db: Db, idOrName: string): TemplateRecord {
  const r = db
    .q('SELECT * FROM templates WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
    .get(idOrName, idOrName, idOrName) as Row | undefined;
  if (!r)
    throw new KilnError('not_found', `template "${idOrName}" does not exist`, {
      details: { template: idOrName },
    });
  return templateRow(r);
}

export function listTemplates(db: Db): TemplateRecord[] {
  return (db.q('SELECT * FROM templates ORDER BY name').all() as Row[]).map(templateRow);
}

export function deleteTemplate(db: Db, id: string): void {
  try {
    const res = db.q('DELETE FROM templates WHERE id = ?').run(id);
    if (res.changes === 0) throw new KilnError('not_found', `template "${id}" does not exist`);
  } catch (e) {
    if (isConstraint(e, 'FOREIGNKEY'))
      throw new KilnError('invalid_state', `template "${id}" still has sandboxes`);
    throw e;
  }
}

export function insertSnapshot(db: Db, s: SnapshotRecord): void {
  try {
    db.q(
      `INSERT INTO snapshots (id, name, kind, sandbox_id, template_id, memory_mib, vcpus, parent_id, artifacts, guest_token, pause_ms, machine, created_at, owner_key_id, deleted_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      s.id,
      s.name,
      s.kind,
      s.sandboxId,
      s.templateId,
      s.memoryMiB,
      s.vcpus,
      s.parentId,
      JSON.stringify(s.artifacts),
      s.guestToken,
      s.pauseMs,
      s.machine,
      s.createdAt,
      s.ownerKeyId,
      s.deletedAt,
    );
  } catch (e) {
    if (isConstraint(e, 'PRIMARYKEY'))
      throw new KilnError('already_exists', `snapshot "${s.id}" already exists`);
    if (isConstraint(e, 'UNIQUE'))
      throw new KilnError('already_exists', `a snapshot named "${s.name ?? ''}" already exists`);
    if (isConstraint(e, 'FOREIGNKEY'))
      throw new KilnError('not_found', `parent snapshot "${s.parentId ?? ''}" does not exist`);
    throw e;
  }
}

function snapshotRow(r: Row): SnapshotRecord {
  return {
    id: str(r['id']),
    name: optStr(r['name']),
    kind: str(r['kind']) as SnapshotRecord['kind'],
    sandboxId: optStr(r['sandbox_id']),
    templateId: str(r['template_id']),
    memoryMiB: num(r['memory_mib']),
    vcpus: num(r['vcpus']),
    parentId: optStr(r['parent_id']),
    artifacts: JSON.parse(str(r['artifacts'])) as SnapshotRecord['artifacts'],
    guestToken: optStr(r['guest_token']),
    pauseMs: r['pause_ms'] === null || r['pause_ms'] === undefined ? null : num(r['pause_ms']),
    machine: num(r['machine']),
    createdAt: str(r['created_at']),
    ownerKeyId: optStr(r['owner_key_id']),
    deletedAt: optStr(r['deleted_at']),
  };
}

export function getSnapshot(db: Db, idOrName: string): SnapshotRecord {
  const r = db.q('SELECT * FROM snapshots WHERE id = ?1 OR name = ?1').get(idOrName) as Row | undefined;
  if (!r)
    throw new KilnError('not_found', `snapshot "${idOrName}" does not exist`, {
      details: { snapshotId: idOrName },
    });
  return snapshotRow(r);
}

export function listSnapshots(db: Db, filter: SnapshotFilter = {}): SnapshotRecord[] {
  const deleted = filter.deleted === undefined ? null : filter.deleted ? 1 : 0;
  const rows = db
    .q(
      `SELECT * FROM snapshots WHERE (?1 IS NULL OR sandbox_id = ?1) AND (?2 IS NULL OR template_id = ?2)
         AND (?3 IS NULL OR (deleted_at IS NOT NULL) = ?3) ORDER BY created_at, id`,
    )
    .all(filter.sandboxId ?? null, filter.templateId ?? null, deleted) as Row[];
  return rows.map(snapshotRow);
}

/**
 * Deletes a snapshot for its users: marks it deleted at `at` and frees its name, in one
 * transaction. The record stays (as a disk layer) for `deleteSnapshot` to reclaim.
 */
export function hideSnapshot(db: Db, id: string, at: string): SnapshotRecord {
  return db.tx(() => {
    const cur = getSnapshot(db, id);
    if (cur.id !== id || cur.deletedAt !== null)
      throw new KilnError('not_found', `snapshot "${id}" does not exist`, { details: { snapshotId: id } });
    db.q('UPDATE snapshots SET deleted_at = ?, name = NULL WHERE id = ?').run(at, id);
    return { ...cur, name: null, deletedAt: at };
  });
}

export function updateSnapshot(
  db: Db,
  id: string,
  patch: Pick<SnapshotRecord, 'parentId' | 'artifacts'>,
): SnapshotRecord {
  return db.tx(() => {
    const cur = getSnapshot(db, id);
    if (patch.parentId === cur.id) throw invalidArgument('parentId', 'a snapshot cannot be its own parent');
    try {
      db.q('UPDATE snapshots SET parent_id = ?, artifacts = ? WHERE id = ?').run(
        patch.parentId,
        JSON.stringify(patch.artifacts),
        cur.id,
      );
    } catch (e) {
      if (isConstraint(e, 'FOREIGNKEY'))
        throw new KilnError('not_found', `parent snapshot "${patch.parentId ?? ''}" does not exist`);
      throw e;
    }
    return { ...cur, ...patch };
  });
}

export function snapshotDependents(db: Db, id: string): { snapshots: string[]; sandboxes: string[] } {
  const ids = (rows: unknown): string[] => (rows as Row[]).map((r) => str(r['id']));
  return {
    snapshots: ids(db.q('SELECT id FROM snapshots WHERE parent_id = ? ORDER BY id').all(id)),
    sandboxes: ids(
      // Warm pool members stand on their template's layer like sandboxes (their RAM maps its memory).
      db
        .q(
          `SELECT id FROM sandboxes WHERE source_snapshot_id = ? AND state != 'dead'
           UNION SELECT id FROM pool_vms WHERE snapshot_id = ? ORDER BY id`,
        )
        .all(id, id),
    ),
  };
}

export function deleteSnapshot(db: Db, id: string): void {
  db.tx(() => {
    getSnapshot(db, id);
    const deps = snapshotDependents(db, id);
    if (deps.snapshots.length || deps.sandboxes.length) {
      throw new KilnError(
        'invalid_state',
        `snapshot "${id}" is still used by ${[...deps.snapshots, ...deps.sandboxes].join(', ')}`,
        { details: { snapshotId: id, ...deps } },
      );
    }
    // Dead sandboxes keep their history but no longer pin the layers.
    db.q('UPDATE sandboxes SET source_snapshot_id = NULL WHERE source_snapshot_id = ?').run(id);
    db.q('DELETE FROM snapshots WHERE id = ?').run(id);
  });
}
