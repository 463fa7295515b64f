/** The `events` table (a bounded log per sandbox) and retention of ended sandboxes. */
import { EVENTS_PER_SANDBOX, type EventLevel, type EventRecord } from '../core/domain.ts';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { cursorValue, isConstraint, num, pageLimit, str, type Db, type Row } from './sqlite-db.ts';
import type { Page, PageOpts, PurgeResult } from './store.ts';

export function appendEvent(
  db: Db,
  sandboxId: string,
  level: EventLevel,
  message: string,
  data?: Record<string, unknown>,
): EventRecord {
  return db.tx(() => {
    const at = new Date().toISOString();
    let res;
    try {
      res = db
        .q('INSERT INTO events (sandbox_id, at, level, message, data) VALUES (?, ?, ?, ?, ?)')
        .run(sandboxId, at, level, message, data === undefined ? null : JSON.stringify(data));
    } catch (e) {
      if (isConstraint(e, 'FOREIGNKEY'))
        throw new KilnError('not_found', `sandbox "${sandboxId}" does not exist`);
      throw e;
    }
    // Keep the newest EVENTS_PER_SANDBOX entries of this sandbox.
    db.q(
      `DELETE FROM events WHERE sandbox_id = ?1 AND seq <= (SELECT seq FROM events WHERE sandbox_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)`,
    ).run(sandboxId, EVENTS_PER_SANDBOX);
    return { seq: Number(res.lastInsertRowid), sandboxId, at, level, message, data: data ?? null };
  });
}

export function listEvents(db: Db, sandboxId: string, page?: PageOpts): Page<EventRecord> {
  const limit = pageLimit(page, 100);
  const rows = db
    .q('SELECT * FROM events WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?')
    .all(sandboxId, cursorValue(page), limit + 1) as Row[];
  const more = rows.length > limit;
  const items = rows.slice(0, limit).map((r): EventRecord => ({
    seq: num(r['seq']),
    sandboxId: str(r['sandbox_id']),
    at: str(r['at']),
    level: str(r['level']) as EventLevel,
    message: str(r['message']),
    data: r['data'] === null ? null : (JSON.parse(str(r['data'])) as Record<string, unknown>),
  }));
  const last = items.at(-1);
  return { items, next: more && last ? String(last.seq) : undefined };
}

/**
 * Deletes the dead sandboxes that ended before `endedBefore`, with their events (the foreign
 * key cascades) and their finished journal entries. A dead sandbox that a snapshot still names
 * as its source (`snapshots.sandbox_id`: a user's snapshot, or an internal one garbage
 * collection has not reclaimed yet) is kept, so the snapshot's record never points at nothing.
 */
export function purgeEnded(db: Db, endedBefore: string): PurgeResult {
  const t = Date.parse(endedBefore);
  if (!Number.isFinite(t)) throw invalidArgument('endedBefore', `"${endedBefore}" is not an ISO time`);
  const cutoff = new Date(t).toISOString();
  return db.tx(() => {
    const ids = (
      db
        .q(
          `SELECT id FROM sandboxes WHERE state = 'dead' AND ended_at < ?
             AND NOT EXISTS (SELECT 1 FROM snapshots WHERE snapshots.sandbox_id = sandboxes.id) ORDER BY rowid`,
        )
        .all(cutoff) as Row[]
    ).map((r) => str(r['id']));
    let events = 0;
    let operations = 0;
    for (const id of ids) {
      events += num((db.q('SELECT count(*) AS n FROM events WHERE sandbox_id = ?').get(id) as Row)['n']);
      operations += Number(
        db.q(`DELETE FROM operations WHERE subject = ? AND state != 'running'`).run(id).changes,
      );
      db.q('DELETE FROM sandboxes WHERE id = ?').run(id);
    }
    return { sandboxes: ids, events, operations };
  });
}
