/** The `volumes` and `volume_mounts` tables. */
import type { VolumeMount, VolumeRecord } from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { insertUnique, num, optStr, str, type Db, type Row } from './sqlite-db.ts';

/** Sandbox states in which a mount still counts (the sandbox has, or will have again, a VM). */
const LIVE_STATES = `('creating', 'running', 'pausing', 'paused', 'resuming', 'killing')`;

function volumeRow(r: Row): VolumeRecord {
  return {
    id: str(r['id']),
    name: str(r['name']),
    token: str(r['token']),
    createdAt: str(r['created_at']),
    ownerKeyId: optStr(r['owner_key_id']),
  };
}

function mountRow(r: Row): VolumeMount {
  return {
    sandboxId: str(r['sandbox_id']),
    volumeId: str(r['volume_id']),
    path: str(r['path']),
    index: num(r['idx']),
  };
}

export function insertVolume(db: Db, v: VolumeRecord): void {
  insertUnique(
    db,
    'INSERT INTO volumes (id, name, token, created_at, owner_key_id) VALUES (?, ?, ?, ?, ?)',
    [v.id, v.name, v.token, v.createdAt, v.ownerKeyId],
    () => `a volume named "${v.name}" already exists`,
  );
}

export function getVolume(db: Db, idOrName: string): VolumeRecord {
  const r = db
    .q('SELECT * FROM volumes WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
    .get(idOrName, idOrName, idOrName) as Row | undefined;
  if (!r)
    throw new KilnError('not_found', `volume "${idOrName}" does not exist`, {
      details: { volume: idOrName },
    });
  return volumeRow(r);
}

export function listVolumes(db: Db): VolumeRecord[] {
  return (db.q('SELECT * FROM volumes ORDER BY created_at, id').all() as Row[]).map(volumeRow);
}

/** Live sandboxes that mount volume `id` (states in LIVE_STATES), oldest first. */
export function volumeUsers(db: Db, id: string): string[] {
  return (
    db
      .q(
        `SELECT DISTINCT m.sandbox_id AS id FROM volume_mounts m JOIN sandboxes s ON s.id = m.sandbox_id
         WHERE m.volume_id = ? AND s.state IN ${LIVE_STATES} ORDER BY s.created_at, s.id`,
      )
      .all(id) as Row[]
  ).map((r) => str(r['id']));
}

/**
 * Deletes volume `id` unless a live sandbox mounts it (checked in the same transaction, so a
 * create that attaches it concurrently either comes first and wins or finds it gone).
 */
export function deleteVolume(db: Db, id: string): void {
  db.tx(() => {
    const users = volumeUsers(db, id);
    if (users.length > 0)
      throw new KilnError(
        'invalid_state',
        `volume "${id}" is mounted by sandbox ${users.join(', ')}; kill those sandboxes (running or paused) first`,
        { details: { volumeId: id, sandboxIds: users } },
      );
    const res = db.q('DELETE FROM volumes WHERE id = ?').run(id);
    if (res.changes === 0)
      throw new KilnError('not_found', `volume "${id}" does not exist`, { details: { volume: id } });
  });
}

/** Replaces sandbox `sandboxId`'s mounts; every volume must still exist (else not_found). */
export function setMounts(db: Db, sandboxId: string, mounts: readonly VolumeMount[]): void {
  db.tx(() => {
    db.q('DELETE FROM volume_mounts WHERE sandbox_id = ?').run(sandboxId);
    for (const m of mounts) {
      if (!db.q('SELECT 1 FROM volumes WHERE id = ?').get(m.volumeId))
        throw new KilnError('not_found', `volume "${m.volumeId}" does not exist`, {
          details: { volume: m.volumeId },
        });
      db.q('INSERT INTO volume_mounts (sandbox_id, volume_id, path, idx) VALUES (?, ?, ?, ?)').run(
        sandboxId,
        m.volumeId,
        m.path,
        m.index,
      );
    }
  });
}

export function listMounts(db: Db, sandboxId: string): VolumeMount[] {
  return (db.q('SELECT * FROM volume_mounts WHERE sandbox_id = ? ORDER BY idx').all(sandboxId) as Row[]).map(
    mountRow,
  );
}
