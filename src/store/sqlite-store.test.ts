import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { asKilnError, isNoSpace } from '../core/errors.ts';
import { OPEN_NETWORK } from '../core/network-policy.ts';
import { MIGRATIONS } from './migrations.ts';
import { SqliteStore } from './sqlite-store.ts';
import { storeGcContract } from './store-gc.contract.ts';
import { storeJournalContract } from './store-journal.contract.ts';
import { sandbox, storeContract, template, type StoreFixture } from './store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-store-'));
let n = 0;
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const inMemory: StoreFixture = { open: () => new SqliteStore(':memory:') };
const onDisk: StoreFixture = {
  open: () => new SqliteStore(join(dir, `s${n++}.db`, 'state.db')),
  reopen: (s) => {
    const path = join(dir, `s${n - 1}.db`, 'state.db');
    s.close();
    return new SqliteStore(path);
  },
};
for (const [name, fx] of [
  ['SqliteStore in memory', inMemory],
  ['SqliteStore on disk', onDisk],
] as const) {
  storeContract(name, fx);
  storeJournalContract(name, fx);
  storeGcContract(name, fx);
}

test('a new database is migrated to the latest schema, in WAL mode with foreign keys', () => {
  const path = join(dir, 'fresh.db');
  const s = new SqliteStore(path);
  assert.equal(s.schemaVersion, MIGRATIONS.length);
  s.close();
  const raw = new DatabaseSync(path);
  assert.equal((raw.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode, 'wal');
  raw.close();
  const again = new SqliteStore(path); // re-opening applies nothing twice
  assert.equal(again.schemaVersion, MIGRATIONS.length);
  again.close();
});

test('a database from a newer kiln is refused with a clear error', () => {
  const path = join(dir, 'future.db');
  const raw = new DatabaseSync(path);
  raw.exec(`PRAGMA user_version = ${MIGRATIONS.length + 5}`);
  raw.close();
  assert.throws(() => new SqliteStore(path), {
    code: 'invalid_state',
    message: /newer than this kiln understands/,
  });
});

/** A database at `file` migrated up to (not including) the migration that contains `marker`. */
function before(file: string, marker: string): { path: string; raw: DatabaseSync } {
  const path = join(dir, file);
  const raw = new DatabaseSync(path);
  const v = MIGRATIONS.findIndex((m) => m.includes(marker));
  assert.ok(v > 0, `a migration has ${marker}`);
  for (const m of MIGRATIONS.slice(0, v)) raw.exec(m);
  raw.exec(`PRAGMA user_version = ${v}`);
  raw.exec(
    `INSERT INTO templates (id, name, image_key, memory_mib, vcpus, snapshot_id, created_at) VALUES ('tpl-1', 'base', 'k', 512, 1, NULL, 't')`,
  );
  return { path, raw };
}

/** Inserts a sandbox row as the first schema has it. */
function oldSandbox(raw: DatabaseSync, id: string, state: string): void {
  raw.exec(
    `INSERT INTO sandboxes (id, template_id, state, memory_mib, vcpus, metadata, env_vars, access_token, created_at, end_at, auto_pause, allow_internet)
     VALUES ('${id}', 'tpl-1', '${state}', 512, 1, '{}', '{}', 'tok', 't', 't', 0, 1)`,
  );
}

test('migration 3: the e2b-env key becomes admin, other keys do not; older objects have no owner', () => {
  const { path, raw } = before('v2.db', 'ADD COLUMN admin');
  const key = raw.prepare(
    'INSERT INTO api_keys (id, name, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)',
  );
  key.run('key-env', 'e2b-env', 'e'.repeat(64), 'e2b_e', '2026-01-01T00:00:00.000Z');
  key.run('key-ci', 'ci', 'c'.repeat(64), 'e2b_c', '2026-01-02T00:00:00.000Z');
  oldSandbox(raw, 'sbx-old', 'running');
  raw.close();
  const s = new SqliteStore(path);
  assert.equal(s.schemaVersion, MIGRATIONS.length);
  assert.deepEqual(
    s.listApiKeys().map((k) => [k.name, k.admin]),
    [
      ['e2b-env', true],
      ['ci', false],
    ],
  );
  assert.equal(s.getSandbox('sbx-old').ownerKeyId, null);
  assert.equal(s.getTemplate('base').ownerKeyId, null);
  s.close();
});

test('migration 5: sandboxes already dead count as ended at the upgrade (purged one retention period later)', () => {
  const { path, raw } = before('v4.db', 'ADD COLUMN ended_at');
  oldSandbox(raw, 'sbx-dead', 'dead');
  oldSandbox(raw, 'sbx-live', 'running');
  raw.close();
  const past = new Date(Date.now() - 1000).toISOString();
  const s = new SqliteStore(path);
  assert.deepEqual(s.purgeEnded(past).sandboxes, []);
  assert.deepEqual(s.purgeEnded(new Date(Date.now() + 1000).toISOString()).sandboxes, ['sbx-dead']);
  assert.equal(s.getSandbox('sbx-live').state, 'running');
  s.close();
});

test('migration 6: snapshots made before it are live (not deleted) and keep their names', () => {
  const { path, raw } = before('v5.db', 'ADD COLUMN deleted_at');
  raw.exec(
    `INSERT INTO snapshots (id, name, kind, template_id, memory_mib, vcpus, artifacts, created_at) VALUES ('snap-old', 'old', 'snapshot', 'tpl-1', 512, 1, '[]', 't')`,
  );
  raw.close();
  const s = new SqliteStore(path);
  assert.deepEqual(
    s.listSnapshots({ deleted: false }).map((x) => [x.id, x.name, x.deletedAt]),
    [['snap-old', 'old', null]],
  );
  s.hideSnapshot('snap-old', 't2');
  assert.deepEqual(
    s.listSnapshots({ deleted: true }).map((x) => x.id),
    ['snap-old'],
  );
  s.close();
});

test('a full disk (SQLITE_FULL on a tiny tmpfs) fails the write as no_space; the store keeps working', () => {
  const mnt = mkdtempSync(join(tmpdir(), 'kiln-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  let s: SqliteStore | undefined;
  try {
    s = new SqliteStore(join(mnt, 'kiln.db'));
    s.putTemplate(template());
    s.insertSandbox(sandbox());
    // Fill the filesystem to the last block.
    const filler = join(mnt, 'filler');
    assert.throws(
      () => {
        for (let i = 0; i < 1024; i++) appendFileSync(filler, Buffer.alloc(4096));
      },
      { code: 'ENOSPC' },
    );
    const big = { blob: 'x'.repeat(256 * 1024) };
    // updateSandbox runs in a BEGIN IMMEDIATE transaction that SQLite rolls back by itself.
    const store = s;
    const err = ((): unknown => {
      try {
        store.updateSandbox('sbx-1', { metadata: big });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.equal(
      (err as { errcode?: number }).errcode,
      13,
      `SQLITE_FULL, not a failed ROLLBACK: ${String(err)}`,
    );
    assert.ok(isNoSpace(err));
    const k = asKilnError(err);
    assert.equal(k.code, 'no_space');
    assert.equal(k.status, 507);
    assert.throws(
      () => {
        store.insertSandbox(sandbox({ id: 'sbx-2', metadata: big }));
      },
      (e) => asKilnError(e).code === 'no_space',
    );
    // Reads still work and show the state before the failed writes.
    assert.deepEqual(store.getSandbox('sbx-1').metadata, {});
    assert.equal(store.listSandboxes().items.length, 1);
    // Space freed: writes work again on the same connection.
    rmSync(filler);
    assert.deepEqual(store.updateSandbox('sbx-1', { metadata: big }).metadata, big);
  } finally {
    s?.close();
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('migration 13: snapshots made before it are of the legacy machine; new ones keep theirs', () => {
  const { path, raw } = before('v12.db', 'ADD COLUMN machine');
  raw.exec(
    `INSERT INTO snapshots (id, name, kind, template_id, memory_mib, vcpus, artifacts, created_at) VALUES ('snap-old', NULL, 'snapshot', 'tpl-1', 512, 1, '[]', 't')`,
  );
  raw.close();
  const s = new SqliteStore(path);
  assert.equal(s.getSnapshot('snap-old').machine, 1);
  s.insertSnapshot({ ...s.getSnapshot('snap-old'), id: 'snap-new', machine: 2 });
  assert.equal(s.getSnapshot('snap-new').machine, 2);
  s.close();
});

test('migration 7: sandboxes made before it have open rules with their own internet flag, and no traffic token', () => {
  const { path, raw } = before('v6.db', 'ADD COLUMN traffic_token');
  oldSandbox(raw, 'sbx-open', 'running');
  oldSandbox(raw, 'sbx-closed', 'paused');
  raw.exec(`UPDATE sandboxes SET allow_internet = 0 WHERE id = 'sbx-closed'`);
  raw.close();
  const s = new SqliteStore(path);
  assert.deepEqual(s.getSandbox('sbx-open').network, OPEN_NETWORK);
  assert.deepEqual(s.getSandbox('sbx-closed').network, {
    ...OPEN_NETWORK,
    egress: { allowOut: [], denyOut: [], internet: false },
  });
  assert.equal(s.getSandbox('sbx-closed').trafficToken, null);
  s.close();
});

test('migration 8: a sandbox paused before it kept memory; every sandbox before it pauses with memory', () => {
  const { path, raw } = before('v7.db', 'ADD COLUMN pause_kind');
  oldSandbox(raw, 'sbx-run', 'running');
  oldSandbox(raw, 'sbx-paused', 'paused');
  raw.close();
  const s = new SqliteStore(path);
  assert.equal(s.getSandbox('sbx-run').pauseKind, null);
  assert.equal(s.getSandbox('sbx-paused').pauseKind, 'memory');
  assert.equal(s.getSandbox('sbx-run').autoPauseMemory, true);
  assert.equal(s.getSandbox('sbx-paused').autoPauseMemory, true);
  s.close();
});
