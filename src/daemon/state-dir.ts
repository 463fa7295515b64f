import { chmod, lstat, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { KilnError } from '../core/errors.ts';

/** What kilnd keeps at the top of its state dir; anything else there is not touched. */
const KNOWN_FILES = [
  'kiln.db',
  'kiln.db-wal',
  'kiln.db-shm',
  'e2b-env.key',
  'e2b.json',
  'kilnd.log',
  'kilnd.pid',
  'kilnd.lock',
  'kilnd.sock',
  'accel.json',
];
/** Trees of VM runtime dirs and snapshots: every entry below them is kiln's. */
const KNOWN_TREES = ['vms', 'data'];
/** vms/<id>/<file> and data/snapshots/<id>/<file>: nothing kiln makes is deeper. */
const MAX_DEPTH = 4;
/** A bound on the one-time walk (a state dir holds a few files per VM and snapshot). */
const MAX_ENTRIES = 200_000;

const octal = (mode: number): string => (mode & 0o777).toString(8).padStart(4, '0');

export interface SecureReport {
  /** The state dir's own mode was wider than 0700 and was fixed (its old mode). */
  dirWas: string | undefined;
  /** Entries below it whose group/other bits were removed (paths relative to the state dir). */
  fixed: string[];
}

/**
 * Makes kilnd's state dir private before anything opens it: the database holds sandbox tokens,
 * env vars and snapshot tokens, `e2b-env.key` an admin API key, the snapshots guest memory. The
 * dir must belong to kilnd's uid (else `permission_denied`: kilnd will not keep secrets in a
 * directory someone else controls) and is made 0700 if it is wider; the files kiln keeps in it
 * lose any group/other bits (a state dir from a kiln before this check, or made under a loose
 * umask). New files are private because kilnd runs with umask 077 (set by its entry, inherited
 * by QEMU and qemu-img). Staging dirs (`.staging-*`, removed at start-up) are skipped: an
 * export's hard-links files of the shared image cache.
 */
export async function secureStateDir(dir: string, log: Logger): Promise<SecureReport> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // stat follows a symlink: the directory the secrets land in is what must be private.
  const st = await stat(dir);
  if (!st.isDirectory()) throw new KilnError('invalid_argument', `state dir ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid)
    throw new KilnError(
      'permission_denied',
      `state dir ${dir} belongs to uid ${st.uid}, not to kilnd's uid ${uid}; kilnd keeps secrets there and will not use a directory another user controls (chown it or pick another KILN_STATE_DIR)`,
      { details: { stateDir: dir, owner: st.uid, uid } },
    );
  const report: SecureReport = { dirWas: undefined, fixed: [] };
  if (st.mode & 0o077) {
    try {
      await chmod(dir, 0o700);
    } catch (e) {
      throw new KilnError(
        'permission_denied',
        `state dir ${dir} is mode ${octal(st.mode)} (readable by others) and cannot be made 0700: ${(e as Error).message}`,
        { cause: e },
      );
    }
    report.dirWas = octal(st.mode);
    log.warn({ stateDir: dir, was: report.dirWas }, `state dir was mode ${report.dirWas}; made it 0700`);
  }
  let seen = 0;
  const walk = async (rel: string, depth: number): Promise<void> => {
    if (++seen > MAX_ENTRIES) return;
    const p = join(dir, rel);
    const s = await lstat(p).catch(() => undefined);
    // Links are not followed (nor changed); only what kilnd's uid owns can be fixed.
    if (!s || s.isSymbolicLink() || (uid !== undefined && s.uid !== uid)) return;
    if (s.mode & 0o077) {
      await chmod(p, s.mode & 0o700).then(
        () => report.fixed.push(rel),
        (e: unknown) => {
          log.warn({ err: e, path: p }, 'cannot make a state file private');
        },
      );
    }
    if (!s.isDirectory() || depth >= MAX_DEPTH) return;
    for (const name of await readdir(p).catch(() => [] as string[])) {
      if (name.startsWith('.staging-')) continue;
      await walk(join(rel, name), depth + 1);
    }
  };
  for (const name of [...KNOWN_FILES, ...KNOWN_TREES]) await walk(name, 1);
  if (report.fixed.length)
    log.warn(
      { stateDir: dir, count: report.fixed.length, first: report.fixed.slice(0, 10) },
      `made ${report.fixed.length} state files private (they were readable by group or others)`,
    );
  return report;
}
