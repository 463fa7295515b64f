import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MIGRATIONS } from './migrations.ts';
import { SqliteStore } from './sqlite-store.ts';
import { storeContract } from './store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-store-'));
let n = 0;
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

storeContract('SqliteStore in memory', { open: () => new SqliteStore(':memory:') });

storeContract('SqliteStore on disk', {
  open: () => new SqliteStore(join(dir, `s${n++}.db`, 'state.db')),
  reopen: (s) => {
    const path = join(dir, `s${n - 1}.db`, 'state.db');
    s.close();
    return new SqliteStore(path);
  },
});

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
