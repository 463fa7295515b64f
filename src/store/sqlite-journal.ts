/** The `operations` journal and the `api_keys` table. */
import type { ApiKeyRecord, OperationRecord, OperationState, OperationStep } from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { insertUnique, num, optStr, str, type Db, type Row } from './sqlite-db.ts';

export function beginOperation(
  db: Db,
  op: Omit<OperationRecord, 'state' | 'steps' | 'error' | 'endedAt'>,
): OperationRecord {
  insertUnique(
    db,
    `INSERT INTO operations (id, kind, subject, request_id, state, steps, error, started_at, ended_at) VALUES (?, ?, ?, ?, 'running', '[]', NULL, ?, NULL)`,
    [op.id, op.kind, op.subject, op.requestId, op.startedAt],
    () => `operation "${op.id}" already exists`,
  );
  return { ...op, state: 'running', steps: [], error: null, endedAt: null };
}

function operationRow(r: Row): OperationRecord {
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

export function getOperation(db: Db, opId: string): OperationRecord {
  const r = db.q('SELECT * FROM operations WHERE id = ?').get(opId) as Row | undefined;
  if (!r) throw new KilnError('not_found', `operation "${opId}" does not exist`);
  return operationRow(r);
}

export function addStep(db: Db, opId: string, step: OperationStep): void {
  db.tx(() => {
    const op = getOperation(db, opId);
    if (op.state !== 'running') throw new KilnError('invalid_state', `operation "${opId}" is ${op.state}`);
    db.q('UPDATE operations SET steps = ? WHERE id = ?').run(JSON.stringify([...op.steps, step]), opId);
  });
}

export function finishOperation(
  db: Db,
  opId: string,
  state: Exclude<OperationState, 'running'>,
  error?: string,
): void {
  const res = db
    .q(`UPDATE operations SET state = ?, error = ?, ended_at = ? WHERE id = ? AND state = 'running'`)
    .run(state, error ?? null, new Date().toISOString(), opId);
  if (res.changes === 0) {
    const op = getOperation(db, opId); // not_found if missing
    throw new KilnError('invalid_state', `operation "${opId}" is already ${op.state}`);
  }
}

export function openOperations(db: Db): OperationRecord[] {
  return (
    db.q(`SELECT * FROM operations WHERE state = 'running' ORDER BY started_at, id`).all() as Row[]
  ).map(operationRow);
}

export function insertApiKey(db: Db, k: ApiKeyRecord): void {
  insertUnique(
    db,
    'INSERT INTO api_keys (id, name, key_hash, prefix, created_at, last_used_at, admin) VALUES (?, ?, ?, ?, ?, ?, ?)',
    [k.id, k.name, k.keyHash, k.prefix, k.createdAt, k.lastUsedAt, k.admin ? 1 : 0],
    () => `API key "${k.id}" already exists`,
  );
}

function apiKeyRow(r: Row): ApiKeyRecord {
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

export function getApiKeyByHash(db: Db, keyHash: string): ApiKeyRecord {
  const r = db.q('SELECT * FROM api_keys WHERE key_hash = ?').get(keyHash) as Row | undefined;
  if (!r) throw new KilnError('not_found', 'no such API key');
  return apiKeyRow(r);
}

export function listApiKeys(db: Db): ApiKeyRecord[] {
  return (db.q('SELECT * FROM api_keys ORDER BY created_at, id').all() as Row[]).map(apiKeyRow);
}

export function touchApiKey(db: Db, id: string, at: string): void {
  db.q('UPDATE api_keys SET last_used_at = ? WHERE id = ?').run(at, id);
}

export function deleteApiKey(db: Db, id: string): void {
  const res = db.q('DELETE FROM api_keys WHERE id = ?').run(id);
  if (res.changes === 0) throw new KilnError('not_found', `API key "${id}" does not exist`);
}
