/** The `template_builds` and `template_build_logs` tables (issue 14). */
import type { TemplateBuildRecord, TemplateBuildStatus } from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import type { BuildLogEntry } from '../core/template-steps.ts';
import { num, optStr, str, type Db, type Row } from './sqlite-db.ts';

function buildRow(r: Row): TemplateBuildRecord {
  const reason = optStr(r['reason']);
  return {
    id: str(r['id']),
    templateId: str(r['template_id']),
    templateName: str(r['template_name']),
    ownerKeyId: optStr(r['owner_key_id']),
    tags: JSON.parse(str(r['tags'])) as string[],
    status: str(r['status']) as TemplateBuildStatus,
    vcpus: r['vcpus'] === null ? null : num(r['vcpus']),
    memoryMiB: r['memory_mib'] === null ? null : num(r['memory_mib']),
    spec: optStr(r['spec']),
    reason: reason ? (JSON.parse(reason) as TemplateBuildRecord['reason']) : null,
    builderId: optStr(r['builder_id']),
    layers: JSON.parse(str(r['layers'])) as string[],
    snapshotId: optStr(r['snapshot_id']),
    createdAt: str(r['created_at']),
    updatedAt: str(r['updated_at']),
    finishedAt: optStr(r['finished_at']),
  };
}

/** Inserts or replaces a build (its log lines stay). */
export function putBuild(db: Db, b: TemplateBuildRecord): void {
  db.q(
    `INSERT INTO template_builds (id, template_id, template_name, owner_key_id, tags, status, vcpus,
       memory_mib, spec, reason, builder_id, layers, snapshot_id, created_at, updated_at, finished_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT(id) DO UPDATE SET template_id = excluded.template_id,
       template_name = excluded.template_name, owner_key_id = excluded.owner_key_id,
       tags = excluded.tags, status = excluded.status, vcpus = excluded.vcpus,
       memory_mib = excluded.memory_mib, spec = excluded.spec, reason = excluded.reason,
       builder_id = excluded.builder_id, layers = excluded.layers, snapshot_id = excluded.snapshot_id,
       updated_at = excluded.updated_at, finished_at = excluded.finished_at`,
  ).run(
    b.id,
    b.templateId,
    b.templateName,
    b.ownerKeyId,
    JSON.stringify(b.tags),
    b.status,
    b.vcpus,
    b.memoryMiB,
    b.spec,
    b.reason ? JSON.stringify(b.reason) : null,
    b.builderId,
    JSON.stringify(b.layers),
    b.snapshotId,
    b.createdAt,
    b.updatedAt,
    b.finishedAt,
  );
}

export function getBuild(db: Db, id: string): TemplateBuildRecord {
  const r = db.q('SELECT * FROM template_builds WHERE id = ?').get(id) as Row | undefined;
  if (!r)
    throw new KilnError('not_found', `template build "${id}" does not exist`, { details: { buildID: id } });
  return buildRow(r);
}

/** Builds of one template (or all), oldest first. */
export function listBuilds(db: Db, templateId?: string): TemplateBuildRecord[] {
  const rows = templateId
    ? db.q('SELECT * FROM template_builds WHERE template_id = ? ORDER BY created_at, id').all(templateId)
    : db.q('SELECT * FROM template_builds ORDER BY created_at, id').all();
  return (rows as Row[]).map(buildRow);
}

export function deleteBuilds(db: Db, templateId: string): void {
  db.q('DELETE FROM template_builds WHERE template_id = ?').run(templateId);
}

export function appendBuildLog(db: Db, buildId: string, e: BuildLogEntry): void {
  db.q(
    `INSERT INTO template_build_logs (build_id, seq, ts, level, message, step)
     VALUES (?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM template_build_logs WHERE build_id = ?), ?, ?, ?, ?)`,
  ).run(buildId, buildId, e.timestamp, e.level, e.message, e.step ?? null);
}

/** Log lines from `offset` (0-based), at most `limit`. */
export function buildLogs(db: Db, buildId: string, offset: number, limit: number): BuildLogEntry[] {
  return (
    db
      .q('SELECT * FROM template_build_logs WHERE build_id = ? AND seq >= ? ORDER BY seq LIMIT ?')
      .all(buildId, offset, limit) as Row[]
  ).map((r) => {
    const step = optStr(r['step']);
    return {
      timestamp: str(r['ts']),
      level: str(r['level']) as BuildLogEntry['level'],
      message: str(r['message']),
      ...(step !== null ? { step } : {}),
    };
  });
}
