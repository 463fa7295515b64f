import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import {
  EVENTS_PER_SANDBOX,
  SANDBOX_TRANSITIONS,
  type ApiKeyRecord,
  type EventLevel,
  type EventRecord,
  type OperationRecord,
  type OperationState,
  type OperationStep,
  type SandboxCondition,
  type SandboxRecord,
  type SandboxState,
  type SnapshotRecord,
  type TemplateRecord,
} from '../core/domain.ts';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { MIGRATIONS } from './migrations.ts';
import type { Page, PageOpts, SandboxFilter, SandboxPatch, Store } from './store.ts';

type Row = Record<string, SQLInputValue>;

const str = (v: SQLInputValue | undefined): string =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'bigint' ? String(v) : '';
const optStr = (v: SQLInputValue | undefined): string | null =>
  v === null || v === undefined ? null : str(v);
const num = (v: SQLInputValue | undefined): number => Number(v);

const MAX_PAGE = 1000;

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
    s.allowInternet ? 1 : 0,
    s.endReason,
    s.sourceSnapshotId,
    s.condition === null ? null : JSON.stringify(s.condition),
  ];
}

function pageLimit(p: PageOpts | undefined, dflt: number): number {
  const l = p?.limit ?? dflt;
  if (!Number.isInteger(l) || l < 1 || l > MAX_PAGE)
    throw invalidArgument('limit', `must be an integer from 1 to ${MAX_PAGE}`);
  return l;
}

function cursorValue(p: PageOpts | undefined): number {
  if (p?.cursor === undefined || p.cursor === '') return 0;
  if (!/^\d{1,15}$/.test(p.cursor))
    throw invalidArgument('cursor', `"${p.cursor}" is not a cursor this server gave out`);
  return Number(p.cursor);
}

function isConstraint(e: unknown, kind: 'PRIMARYKEY' | 'UNIQUE' | 'FOREIGNKEY'): boolean {
  const m = e instanceof Error ? e.message : '';
  if (kind === 'FOREIGNKEY') return /FOREIGN KEY constraint failed/.test(m);
  return /UNIQUE constraint failed|PRIMARY KEY/.test(m);
}

/**
 * The Store on SQLite through node:sqlite (no native addon). WAL with synchronous=FULL: a
 * committed change survives kill -9 of the daemon and a host crash. Writes that read first
 * (state transitions) run in BEGIN IMMEDIATE transactions.
 */
export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  /** Opens (creating if needed) and migrates the database at `path` (`:memory:` for tests). */
  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.#db = new DatabaseSync(path);
    this.#db.exec(
      'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;',
    );
    this.#migrate();
  }

  /** Schema version (number of applied migrations). */
  get schemaVersion(): number {
    return num((this.#db.prepare('PRAGMA user_version').get() as Row)['user_version']);
  }

  #migrate(): void {
    const have = this.schemaVersion;
    if (have > MIGRATIONS.length) {
      throw new KilnError(
        'invalid_state',
        `the state database has schema version ${have}, newer than this kiln understands (${MIGRATIONS.length}); upgrade kiln`,
      );
    }
    for (let v = have; v < MIGRATIONS.length; v++) {
      this.#tx(() => {
        this.#db.exec(MIGRATIONS[v] ?? '');
        this.#db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  #q(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.#db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  #tx<T>(fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const r = fn();
      this.#db.exec('COMMIT');
      return r;
    } catch (e) {
      // SQLite rolls back by itself on some errors (SQLITE_FULL among them); a second ROLLBACK
      // would then throw and hide the error that matters.
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  // ---- templates

  putTemplate(t: TemplateRecord): void {
    try {
      this.#q(
        `INSERT INTO templates (id, name, image_key, memory_mib, vcpus, snapshot_id, created_at, owner_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, image_key = excluded.image_key, memory_mib = excluded.memory_mib,
           vcpus = excluded.vcpus, snapshot_id = excluded.snapshot_id`,
      ).run(t.id, t.name, t.imageKey, t.memoryMiB, t.vcpus, t.snapshotId, t.createdAt, t.ownerKeyId);
    } catch (e) {
      if (isConstraint(e, 'UNIQUE'))
        throw new KilnError('already_exists', `a template named "${t.name}" already exists`);
      throw e;
    }
  }

  #template(r: Row): TemplateRecord {
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

  getTemplate(idOrName: string): TemplateRecord {
    const r = this.#q('SELECT * FROM templates WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1').get(
      idOrName,
      idOrName,
      idOrName,
    ) as Row | undefined;
    if (!r)
      throw new KilnError('not_found', `template "${idOrName}" does not exist`, {
        details: { template: idOrName },
      });
    return this.#template(r);
  }

  listTemplates(): TemplateRecord[] {
    return (this.#q('SELECT * FROM templates ORDER BY name').all() as Row[]).map((r) => this.#template(r));
  }

  deleteTemplate(id: string): void {
    try {
      const res = this.#q('DELETE FROM templates WHERE id = ?').run(id);
      if (res.changes === 0) throw new KilnError('not_found', `template "${id}" does not exist`);
    } catch (e) {
      if (isConstraint(e, 'FOREIGNKEY'))
        throw new KilnError('invalid_state', `template "${id}" still has sandboxes`);
      throw e;
    }
  }

  // ---- sandboxes

  insertSandbox(s: SandboxRecord): void {
    try {
      this.#q(
        `INSERT INTO sandboxes (id, template_id, ${SANDBOX_COLUMNS.join(', ')}, created_at, owner_key_id)
         VALUES (?, ?, ${SANDBOX_COLUMNS.map(() => '?').join(', ')}, ?, ?)`,
      ).run(s.id, s.templateId, ...sandboxValues(s), s.createdAt, s.ownerKeyId);
    } catch (e) {
      if (isConstraint(e, 'PRIMARYKEY') || isConstraint(e, 'UNIQUE')) {
        throw new KilnError('already_exists', `sandbox "${s.id}" already exists`);
      }
      if (isConstraint(e, 'FOREIGNKEY'))
        throw new KilnError('not_found', `template or snapshot of sandbox "${s.id}" does not exist`);
      throw e;
    }
  }

  #sandbox(r: Row): SandboxRecord {
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
      allowInternet: num(r['allow_internet']) === 1,
      endReason: optStr(r['end_reason']),
      sourceSnapshotId: optStr(r['source_snapshot_id']),
      ownerKeyId: optStr(r['owner_key_id']),
      condition:
        r['condition'] === null || r['condition'] === undefined
          ? null
          : (JSON.parse(str(r['condition'])) as SandboxCondition),
    };
  }

  getSandbox(id: string): SandboxRecord {
    const r = this.#q('SELECT * FROM sandboxes WHERE id = ?').get(id) as Row | undefined;
    if (!r)
      throw new KilnError('not_found', `sandbox "${id}" does not exist`, { details: { sandboxId: id } });
    return this.#sandbox(r);
  }

  listSandboxes(filter: SandboxFilter = {}, page?: PageOpts): Page<SandboxRecord> {
    const limit = pageLimit(page, 100);
    const where: string[] = ['rowid > ?'];
    const args: SQLInputValue[] = [cursorValue(page)];
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
    const rows = this.#db
      .prepare(
        `SELECT rowid AS _cursor, * FROM sandboxes WHERE ${where.join(' AND ')} ORDER BY rowid LIMIT ?`,
      )
      .all(...args, limit + 1) as Row[];
    const more = rows.length > limit;
    const items = rows.slice(0, limit);
    const last = items.at(-1);
    return {
      items: items.map((r) => this.#sandbox(r)),
      next: more && last ? str(last['_cursor']) : undefined,
    };
  }

  updateSandbox(id: string, patch: SandboxPatch, expect?: SandboxState[]): SandboxRecord {
    return this.#tx(() => {
      const cur = this.getSandbox(id);
      if (expect && !expect.includes(cur.state)) {
        throw new KilnError('invalid_state', `sandbox "${id}" is ${cur.state}, not ${expect.join(' or ')}`, {
          details: { sandboxId: id, state: cur.state },
        });
      }
      if (
        patch.state !== undefined &&
        patch.state !== cur.state &&
        !SANDBOX_TRANSITIONS[cur.state].includes(patch.state)
      ) {
        throw new KilnError(
          'invalid_state',
          `sandbox "${id}" cannot go from ${cur.state} to ${patch.state}`,
          {
            details: { sandboxId: id, state: cur.state },
          },
        );
      }
      const next: SandboxRecord = {
        ...cur,
        ...patch,
        id: cur.id,
        createdAt: cur.createdAt,
        ownerKeyId: cur.ownerKeyId,
      };
      this.#q(
        `UPDATE sandboxes SET template_id = ?, ${SANDBOX_COLUMNS.map((c) => `${c} = ?`).join(', ')} WHERE id = ?`,
      ).run(next.templateId, ...sandboxValues(next), id);
      return next;
    });
  }

  deleteSandbox(id: string): void {
    const res = this.#q('DELETE FROM sandboxes WHERE id = ?').run(id);
    if (res.changes === 0) throw new KilnError('not_found', `sandbox "${id}" does not exist`);
  }

  // ---- snapshots

  insertSnapshot(s: SnapshotRecord): void {
    try {
      this.#q(
        `INSERT INTO snapshots (id, name, kind, sandbox_id, template_id, memory_mib, vcpus, parent_id, artifacts, guest_token, pause_ms, created_at, owner_key_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
        s.createdAt,
        s.ownerKeyId,
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

  #snapshot(r: Row): SnapshotRecord {
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
      createdAt: str(r['created_at']),
      ownerKeyId: optStr(r['owner_key_id']),
    };
  }

  getSnapshot(idOrName: string): SnapshotRecord {
    const id = idOrName;
    const r = this.#q('SELECT * FROM snapshots WHERE id = ?1 OR name = ?1').get(id) as Row | undefined;
    if (!r)
      throw new KilnError('not_found', `snapshot "${id}" does not exist`, { details: { snapshotId: id } });
    return this.#snapshot(r);
  }

  listSnapshots(filter: { sandboxId?: string; templateId?: string } = {}): SnapshotRecord[] {
    const rows = this.#q(
      `SELECT * FROM snapshots WHERE (?1 IS NULL OR sandbox_id = ?1) AND (?2 IS NULL OR template_id = ?2) ORDER BY created_at, id`,
    ).all(filter.sandboxId ?? null, filter.templateId ?? null) as Row[];
    return rows.map((r) => this.#snapshot(r));
  }

  updateSnapshot(id: string, patch: Pick<SnapshotRecord, 'parentId' | 'artifacts'>): SnapshotRecord {
    return this.#tx(() => {
      const cur = this.getSnapshot(id);
      if (patch.parentId === cur.id) throw invalidArgument('parentId', 'a snapshot cannot be its own parent');
      try {
        this.#q('UPDATE snapshots SET parent_id = ?, artifacts = ? WHERE id = ?').run(
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

  snapshotDependents(id: string): { snapshots: string[]; sandboxes: string[] } {
    const snaps = (this.#q('SELECT id FROM snapshots WHERE parent_id = ? ORDER BY id').all(id) as Row[]).map(
      (r) => str(r['id']),
    );
    const sbxs = (
      this.#q(`SELECT id FROM sandboxes WHERE source_snapshot_id = ? AND state != 'dead' ORDER BY id`).all(
        id,
      ) as Row[]
    ).map((r) => str(r['id']));
    return { snapshots: snaps, sandboxes: sbxs };
  }

  deleteSnapshot(id: string): void {
    this.#tx(() => {
      this.getSnapshot(id);
      const deps = this.snapshotDependents(id);
      if (deps.snapshots.length || deps.sandboxes.length) {
        throw new KilnError(
          'invalid_state',
          `snapshot "${id}" is still used by ${[...deps.snapshots, ...deps.sandboxes].join(', ')}`,
          {
            details: { snapshotId: id, ...deps },
          },
        );
      }
      // Dead sandboxes keep their history but no longer pin the layers.
      this.#q('UPDATE sandboxes SET source_snapshot_id = NULL WHERE source_snapshot_id = ?').run(id);
      this.#q('DELETE FROM snapshots WHERE id = ?').run(id);
    });
  }

  // ---- operations journal

  beginOperation(op: Omit<OperationRecord, 'state' | 'steps' | 'error' | 'endedAt'>): OperationRecord {
    const rec: OperationRecord = { ...op, state: 'running', steps: [], error: null, endedAt: null };
    try {
      this.#q(
        `INSERT INTO operations (id, kind, subject, request_id, state, steps, error, started_at, ended_at) VALUES (?, ?, ?, ?, 'running', '[]', NULL, ?, NULL)`,
      ).run(op.id, op.kind, op.subject, op.requestId, op.startedAt);
    } catch (e) {
      if (isConstraint(e, 'PRIMARYKEY'))
        throw new KilnError('already_exists', `operation "${op.id}" already exists`);
      throw e;
    }
    return rec;
  }

  addStep(opId: string, step: OperationStep): void {
    this.#tx(() => {
      const op = this.getOperation(opId);
      if (op.state !== 'running') throw new KilnError('invalid_state', `operation "${opId}" is ${op.state}`);
      this.#q('UPDATE operations SET steps = ? WHERE id = ?').run(JSON.stringify([...op.steps, step]), opId);
    });
  }

  finishOperation(opId: string, state: Exclude<OperationState, 'running'>, error?: string): void {
    const res = this.#q(
      `UPDATE operations SET state = ?, error = ?, ended_at = ? WHERE id = ? AND state = 'running'`,
    ).run(state, error ?? null, new Date().toISOString(), opId);
    if (res.changes === 0) {
      const op = this.getOperation(opId); // not_found if missing
      throw new KilnError('invalid_state', `operation "${opId}" is already ${op.state}`);
    }
  }

  #operation(r: Row): OperationRecord {
    return {
      id: str(r['id']),
      kind: str(r['kind']) as OperationRecord['kind'],
      subject: str(r['subject']),
      requestId: optStr(r['request_id']),
      state: str(r['state']) as OperationState,
      steps: JSON.parse(str(r['steps'])) as OperationStep[],
      error: optStr(r['error']),
      startedAt: str(r['started_at']),
      endedAt: optStr(r['ended_at']),
    };
  }

  getOperation(opId: string): OperationRecord {
    const r = this.#q('SELECT * FROM operations WHERE id = ?').get(opId) as Row | undefined;
    if (!r) throw new KilnError('not_found', `operation "${opId}" does not exist`);
    return this.#operation(r);
  }

  openOperations(): OperationRecord[] {
    return (
      this.#q(`SELECT * FROM operations WHERE state = 'running' ORDER BY started_at, id`).all() as Row[]
    ).map((r) => this.#operation(r));
  }

  // ---- events

  appendEvent(
    sandboxId: string,
    level: EventLevel,
    message: string,
    data?: Record<string, unknown>,
  ): EventRecord {
    return this.#tx(() => {
      const at = new Date().toISOString();
      let res;
      try {
        res = this.#q('INSERT INTO events (sandbox_id, at, level, message, data) VALUES (?, ?, ?, ?, ?)').run(
          sandboxId,
          at,
          level,
          message,
          data === undefined ? null : JSON.stringify(data),
        );
      } catch (e) {
        if (isConstraint(e, 'FOREIGNKEY'))
          throw new KilnError('not_found', `sandbox "${sandboxId}" does not exist`);
        throw e;
      }
      // Keep the newest EVENTS_PER_SANDBOX entries of this sandbox.
      this.#q(
        `DELETE FROM events WHERE sandbox_id = ?1 AND seq <= (SELECT seq FROM events WHERE sandbox_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)`,
      ).run(sandboxId, EVENTS_PER_SANDBOX);
      return { seq: Number(res.lastInsertRowid), sandboxId, at, level, message, data: data ?? null };
    });
  }

  listEvents(sandboxId: string, page?: PageOpts): Page<EventRecord> {
    const limit = pageLimit(page, 100);
    const rows = this.#q('SELECT * FROM events WHERE sandbox_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(
      sandboxId,
      cursorValue(page),
      limit + 1,
    ) as Row[];
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

  // ---- API keys

  insertApiKey(k: ApiKeyRecord): void {
    try {
      this.#q(
        'INSERT INTO api_keys (id, name, key_hash, prefix, created_at, last_used_at, admin) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ).run(k.id, k.name, k.keyHash, k.prefix, k.createdAt, k.lastUsedAt, k.admin ? 1 : 0);
    } catch (e) {
      if (isConstraint(e, 'PRIMARYKEY') || isConstraint(e, 'UNIQUE'))
        throw new KilnError('already_exists', `API key "${k.id}" already exists`);
      throw e;
    }
  }

  #apiKey(r: Row): ApiKeyRecord {
    return {
      id: str(r['id']),
      name: str(r['name']),
      keyHash: str(r['key_hash']),
      prefix: str(r['prefix']),
      createdAt: str(r['created_at']),
      lastUsedAt: optStr(r['last_used_at']),
      admin: num(r['admin']) === 1,
    };
  }

  getApiKeyByHash(keyHash: string): ApiKeyRecord {
    const r = this.#q('SELECT * FROM api_keys WHERE key_hash = ?').get(keyHash) as Row | undefined;
    if (!r) throw new KilnError('not_found', 'no such API key');
    return this.#apiKey(r);
  }

  listApiKeys(): ApiKeyRecord[] {
    return (this.#q('SELECT * FROM api_keys ORDER BY created_at, id').all() as Row[]).map((r) =>
      this.#apiKey(r),
    );
  }

  touchApiKey(id: string, at: string): void {
    this.#q('UPDATE api_keys SET last_used_at = ? WHERE id = ?').run(at, id);
  }

  deleteApiKey(id: string): void {
    const res = this.#q('DELETE FROM api_keys WHERE id = ?').run(id);
    if (res.changes === 0) throw new KilnError('not_found', `API key "${id}" does not exist`);
  }

  close(): void {
    this.#stmts.clear();
    this.#db.close();
  }
}
