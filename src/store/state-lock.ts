import { readFileSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { KilnError, isNoSpace, NO_SPACE_ADVICE } from '../core/errors.ts';

/** SQLite's primary result code SQLITE_BUSY: another connection holds the lock. */
const SQLITE_BUSY = 5;

/**
 * The connections holding locks. A DatabaseSync that nothing references is closed when it is
 * garbage-collected, which would drop its lock: until released, a lock is referenced from here.
 */
const HELD = new Set<DatabaseSync>();

/** An exclusive lock on a state dir, held until {@link StateLock.release} or the process ends. */
export interface StateLock {
  readonly path: string;
  release(): void;
}

/**
 * The pid holding a POSIX (fcntl) lock on `path`, from /proc/locks (`N: POSIX ADVISORY WRITE
 * <pid> <maj>:<min>:<inode> <start> <end>`), or undefined when none is listed.
 */
export function lockHolder(path: string): number | undefined {
  let st: { dev: bigint; ino: bigint };
  let locks: string;
  try {
    st = statSync(path, { bigint: true });
    locks = readFileSync('/proc/locks', 'utf8');
  } catch {
    return undefined;
  }
  // glibc's major()/minor() of st_dev; /proc/locks prints them in hex.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  for (const line of locks.split('\n')) {
    const m = /^\d+:\s+POSIX\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (
      m &&
      BigInt(`0x${m[2] ?? ''}`) === major &&
      BigInt(`0x${m[3] ?? ''}`) === minor &&
      BigInt(m[4] ?? '-1') === st.ino
    )
      return Number(m[1]);
  }
  return undefined;
}

/**
 * Takes the exclusive lock of a state dir: `path` (kilnd.lock) opened as a SQLite database in
 * exclusive locking mode with an exclusive transaction left open for as long as the lock is held.
 *
 * Why SQLite: Node has no flock(2). SQLite's unix VFS takes an fcntl write lock, which the kernel
 * drops when the process ends however it ends (kill -9 included), so a crashed daemon never
 * leaves a stale lock; and SQLite also tracks locks between connections of one process, which
 * fcntl alone does not, so a second start in the same process is refused too. Nothing is ever
 * written to the file (journal in memory), so taking the lock needs no free disk space beyond
 * an empty file.
 *
 * A held lock raises `conflict` naming the holder's pid (from /proc/locks).
 */
export function acquireStateLock(path: string, what = 'a kiln daemon'): StateLock {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { timeout: 0 });
    db.exec('PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = MEMORY; BEGIN EXCLUSIVE');
  } catch (e) {
    db?.close();
    const code = (e as { errcode?: unknown }).errcode;
    if (typeof code === 'number' && (code & 0xff) === SQLITE_BUSY) {
      const pid = lockHolder(path);
      const who = pid === undefined ? 'another process' : pid === process.pid ? 'this process' : `pid ${pid}`;
      throw new KilnError(
        'conflict',
        `${what} already runs on this state dir (${who} holds ${path}); stop it first (kiln daemon stop)`,
        { details: { lock: path, ...(pid === undefined ? {} : { pid }) } },
      );
    }
    if (isNoSpace(e))
      throw new KilnError('no_space', `cannot create the lock file ${path}: ${NO_SPACE_ADVICE}`, {
        cause: e,
      });
    throw new KilnError('internal', `cannot take the lock ${path}: ${(e as Error).message}`, { cause: e });
  }
  const held = db;
  HELD.add(held);
  let released = false;
  return {
    path,
    release(): void {
      if (released) return;
      released = true;
      HELD.delete(held);
      try {
        held.exec('ROLLBACK');
      } finally {
        held.close();
      }
    },
  };
}
