/** The `sandboxes` table: records, listing with filters and cursors, checked state changes. */
import type { SQLInputValue } from 'node:sqlite';
import {
  SANDBOX_TRANSITIONS,
  type PauseKind,
  type SandboxCondition,
  type SandboxRecord,
  type SandboxState,
} from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { OPEN_NETWORK, type SandboxNetwork } from '../core/network-policy.ts';
import { cursorValue, isConstraint, num, optStr, pageLimit, str, type Db, type Row } from './sqlite-db.ts';
import type { Page, PageOpts, SandboxFilter, SandboxPatch } from './store.ts';

/** The sandbox columns an insert and an update both write, in the order of sandboxValues. */
const SANDBOX_COLUMNS = [
  'state',
  'memory_mib',
  'vcpus',
  'metadata',
  'env_vars',
  'access_token',
  'started_at',
  'end_at',
  'auto_pause',
  'auto_resume',
  'allow_internet',
  'end_reason',
  'source_snapshot_id',
  'condition',
  'network',
  'traffic_token',
  'pause_kind',
  'auto_pause_memory',
] as const;

function sandboxValues(s: SandboxRecord): SQLInputValue[] {
  return [
    s.state,
    s.memoryMiB,
    s.vcpus,
    JSON.stringify(s.metadata),
    JSON.stringify(s.envVars),
    s.accessToken,
    s.startedAt,
    s.endAt,
    s.autoPause ? 1 : 0,
    s.autoResume ? 1 : 0,
    s.network.egress.internet ? 1 : 0,
    s.endReason,
    s.sourceSnapshotId,
    s.condition === null ? null : JSON.stringify(s.condition),
    JSON.stringify(s.network),
    s.trafficToken,
    s.pauseKind,
    s.autoPauseMemory ? 1 : 0,
  ];
}

/** A row from before migration 7 has no rules: open, with its internet flag. */
function networkOf(r: Row): SandboxNetwork {
  const n = r['network'];
  if (n !== null && n !== undefined) return JSON.parse(str(n)) as SandboxNetwork;
  return { ...OPEN_NETWORK, egress: { ...OPEN_NETWORK.egress, internet: num(r['allow_internet']) === 1 } };
}

function sandboxRow(r: Row): SandboxRecord {
  return {
    id: str(r['id']),
    templateId: str(r['template_id']),
    state: str(r['state']) as SandboxState,
    memoryMiB: num(r['memory_mib']),
    vcpus: num(r['vcpus']),
    metadata: JSON.parse(str(r['metadata'])) as Record<string, string>,
    envVars: JSON.parse(str(r['env_vars'])) as Record<string, string>,
    accessToken: str(r['access_token']),
    createdAt: str(r['created_at']),
    startedAt: optStr(r['started_at']),
    endAt: str(r['end_at']),
    autoPause: num(r['auto_pause']) === 1,
    autoResume: num(r['auto_resume']) === 1,
    autoPauseMemory: num(r['auto_pause_memory']) === 1,
    pauseKind: optStr(r['pause_kind']) as PauseKind | null,
    network: networkOf(r),
    trafficToken: optStr(r['traffic_token']),
    endReason: optStr(r['end_reason']),
    sourceSnapshotId: optStr(r['source_snapshot_id']),
    ownerKeyId: optStr(r['owner_key_id']),
    condition:
      r['condition'] === null || r['condition'] === undefined
        ? null
        : (JSON.parse(str(r['condition'])) as SandboxCondition),
  };
}

/**
 * When a sandbox became dead (`ended_at`, for retention): stamped with the store's wall clock
 * on the transition to `dead`, kept after it, NULL while alive.
 */
const endedAt = (state: SandboxState): string | null => (state === 'dead' ? new Date().toISOString() : null);

export function insertSandbox(db: Db, s: SandboxRecord): void {
  try {
    db.q(
      `INSERT INTO sandboxes (id, template_id, ${SANDBOX_COLUMNS.join(', ')}, created_at, owner_key_id, ended_at)
       VALUES (?, ?, ${SANDBOX_COLUMNS.map(() => '?').join(', ')}, ?, ?, ?)`,
    ).run(s.id, s.templateId, ...sandboxValues(s), s.createdAt, s.ownerKeyId, endedAt(s.state));
  } catch (e) {
    if (isConstraint(e, 'PRIMARYKEY') || isConstraint(e, 'UNIQUE')) {
      throw new KilnError('already_exists', `sandbox "${s.id}" already exists`);
    }
    if (isConstraint(e, 'FOREIGNKEY'))
      throw new KilnError('not_found', `template or snapshot of sandbox "${s.id}" does not exist`);
    throw e;
  }
}

export function getSandbox(db: Db, id: string): SandboxRecord {
  const r = db.q('SELECT * FROM sandboxes WHERE id = ?').get(id) as Row | undefined;
  if (!r) throw new KilnError('not_found', `sandbox "${id}" does not exist`, { details: { sandboxId: id } });
  return sandboxRow(r);
}

export function listSandboxes(db: Db, filter: SandboxFilter = {}, page?: PageOpts): Page<SandboxRecord> {
  const limit = pageLimit(page, 100);
  const desc = filter.order === 'desc';
  const from = cursorValue(page);
  const where: string[] = [desc ? 'rowid < ?' : 'rowid > ?'];
  const args: SQLInputValue[] = [desc && from === 0 ? Number.MAX_SAFE_INTEGER : from];
  if (filter.startedAfter !== undefined) {
    where.push('COALESCE(started_at, created_at) >= ?');
    args.push(filter.startedAfter);
  }
  if (filter.states?.length) {
    where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
    args.push(...filter.states);
  }
  if (filter.templateId) {
    where.push('template_id = ?');
    args.push(filter.templateId);
  }
  if (filter.ownerKeyId !== undefined) {
    where.push('owner_key_id = ?');
    args.push(filter.ownerKeyId);
  }
  for (const [k, v] of Object.entries(filter.metadata ?? {})) {
    where.push('EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) WHERE key = ? AND value = ?)');
    args.push(k, v);
  }
  if (filter.withoutMetadataKey !== undefined) {
    where.push('NOT EXISTS (SELECT 1 FROM json_each(sandboxes.metadata) WHERE key = ?)');
    args.push(filter.withoutMetadataKey);
  }
  const rows = db.raw
    .prepare(
      `SELECT rowid AS _cursor, * FROM sandboxes WHERE ${where.join(' AND ')} ORDER BY rowid ${desc ? 'DESC' : ''} LIMIT ?`,
    )
    .all(...args, limit + 1) as Row[];
  const more = rows.length > limit;
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return { items: items.map(sandboxRow), next: more && last ? str(last['_cursor']) : undefined };
}

/** `invalid_state` unless `cur` may take `patch` (expected state, legal transition). */
function checkTransition(cur: SandboxRecord, patch: SandboxPatch, expect?: SandboxState[]): void {
  const details = { sandboxId: cur.id, state: cur.state };
  if (expect && !expect.includes(cur.state)) {
    throw new KilnError('invalid_state', `sandbox "${cur.id}" is ${cur.state}, not ${expect.join(' or ')}`, {
      details,
    });
  }
  if (
    patch.state !== undefined &&
    patch.state !== cur.state &&
    !SANDBOX_TRANSITIONS[cur.state].includes(patch.state)
  ) {
    throw new KilnError(
      'invalid_state',
      `sandbox "${cur.id}" cannot go from ${cur.state} to ${patch.state}`,
      {
        details,
      },
    );
  }
}

export function updateSandbox(
  db: Db,
  id: string,
  patch: SandboxPatch,
  expect?: SandboxState[],
): SandboxRecord {
  return db.tx(() => {
    const cur = getSandbox(db, id);
    checkTransition(cur, patch, expect);
    const next: SandboxRecord = {
      ...cur,
      ...patch,
      id: cur.id,
      createdAt: cur.createdAt,
      ownerKeyId: cur.ownerKeyId,
    };
    db.q(
      `UPDATE sandboxes SET template_id = ?, ${SANDBOX_COLUMNS.map((c) => `${c} = ?`).join(', ')},
         ended_at = CASE WHEN ? IS NULL THEN NULL ELSE COALESCE(ended_at, ?) END WHERE id = ?`,
    ).run(next.templateId, ...sandboxValues(next), endedAt(next.state), endedAt(next.state), id);
    return next;
  });
}

export function deleteSandbox(db: Db, id: string): void {
  const res = db.q('DELETE FROM sandboxes WHERE id = ?').run(id);
  if (res.changes === 0) throw new KilnError('not_found', `sandbox "${id}" does not exist`);
}
