import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { MIGRATIONS } from './migrations.ts';
import type { PageOpts } from './store.ts';

/** One row as node:sqlite returns it. */
export type Row = Record<string, SQLInputValue>;

export const str = (v: SQLInputValue | undefined): string =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'bigint' ? String(v) : '';
export const optStr = (v: SQLInputValue | undefined): string | null =>
  v === null || v === undefined ? null : str(v);
export const num = (v: SQLInputValue | undefined): number => Number(v);

const MAX_PAGE = 1000;

/** A page size from `p` (default `dflt`); `invalid_argument` outside 1..MAX_PAGE. */
export function pageLimit(p: PageOpts | undefined, dflt: number): number {
  const l = p?.limit ?? dflt;
  if (!Number.isInteger(l) || l < 1 || l > MAX_PAGE)
    throw invalidArgument('limit', `must be an integer from 1 to ${MAX_PAGE}`);
  return l;
}

/** The rowid/seq a cursor stands for (0: from the start); refuses what this store did not give out. */
export function cursorValue(p: PageOpts | undefined): number {
  if (p?.cursor === undefined || p.cursor === '') return 0;
  if (!/^\d{1,15}$/.test(p.cursor))
    throw invalidArgument('cursor', `"${p.cursor}" is not a cursor this server gave out`);
  return Number(p.cursor);
}

/** Whether SQLite refused a write for this kind of constraint. */
export function isConstraint(e: unknown, kind: 'PRIMARYKEY' | 'UNIQUE' | 'FOREIGNKEY'): boolean {
  const m = e instanceof Error ? e.message : '';
  if (kind === 'FOREIGNKEY') return /FOREIGN KEY constraint failed/.test(m);
  return /UNIQUE constraint failed|PRIMARY KEY/.test(m);
}

/** Runs an INSERT; a primary-key or unique clash is `already_exists`, saying `taken`. */
export function insertUnique(db: Db, sql: string, values: SQLInputValue[], taken: () => string): void {
  try {
    db.q(sql).run(...values);
  } catch (e) {
    if (isConstraint(e, 'UNIQUE')) throw new KilnError('already_exists', taken());
    throw e;
  }
}

/**
 * The connection every table module shares: opened in WAL with synchronous=FULL (a committed
 * change survives kill -9 of the daemon and a host crash), foreign keys on, migrated on open;
 * prepared statements cached by their SQL; `tx` runs a BEGIN IMMEDIATE transaction.
 */
export class Db {
  readonly raw: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  /** Opens (creating if needed) and migrates the database at `path` (`:memory:` for tests). */
  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.raw = new DatabaseSync(path);
    this.raw.exec(
      'PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;',
    );
    this.#migrate();
  }

  /** Schema version (number of applied migrations). */
  get schemaVersion(): number {
    return num((this.raw.prepare('PRAGMA user_version').get() as Row)['user_version']);
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
      this.tx(() => {
        this.raw.exec(MIGRATIONS[v] ?? '');
        this.raw.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  /** The prepared statement for `sql`, prepared once. */
  q(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) {
      s = this.raw.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  /** Runs `fn` in a BEGIN IMMEDIATE transaction: committed if it returns, rolled back if it throws. */
  tx<T>(fn: () => T): T {
    this.raw.exec('BEGIN IMMEDIATE');
    try {
      const r = fn();
      this.raw.exec('COMMIT');
      return r;
    } catch (e) {
      // SQLite rolls back by itself on some errors (SQLITE_FULL among them); a second ROLLBACK
      // would then throw and hide the error that matters.
      if (this.raw.isTransaction) this.raw.exec('ROLLBACK');
      throw e;
    }
  }

  close(): void {
    this.#stmts.clear();
    this.raw.close();
  }
}
