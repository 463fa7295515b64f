import { constants } from 'node:fs';
import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import type { GuestUser } from './users.ts';

/**
 * The agent runs as root and acts for a user. Before touching a path it checks, the way the
 * kernel would for that user, that every directory on the way may be searched and the target
 * read or written. Symlinks are resolved first, so a link cannot lead a user somewhere they
 * could not go themselves.
 */
export type AccessKind = 'read' | 'write' | 'search';

export class AccessDeniedError extends Error {}

/** Expands `~`, makes relative paths relative to `base` (home or workdir), normalises. */
export function resolveUserPath(path: string, user: GuestUser, base?: string): string {
  let p = path;
  if (p === '' || p === '~') return normalize(base ?? user.home);
  if (p.startsWith('~/')) p = join(user.home, p.slice(2));
  else if (p.startsWith('~')) throw new TypeError(`path '${path}': only "~" and "~/..." are supported`);
  return isAbsolute(p) ? normalize(p) : resolve(base ?? user.home, p);
}

function allowed(user: GuestUser, st: { uid: number; gid: number; mode: number }, want: number): boolean {
  if (user.uid === 0) return true;
  let bits: number;
  if (st.uid === user.uid) bits = (st.mode >> 6) & 7;
  else if (user.gids.includes(st.gid)) bits = (st.mode >> 3) & 7;
  else bits = st.mode & 7;
  return (bits & want) === want;
}

const R = 4;
const W = 2;
const X = 1;

/** Throws AccessDeniedError unless `user` may search every ancestor directory of `path`. */
async function checkAncestors(user: GuestUser, path: string): Promise<void> {
  if (user.uid === 0) return;
  const parts = path.split('/').filter(Boolean);
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    const st = await stat(cur);
    if (!allowed(user, st, X)) throw new AccessDeniedError(`permission denied: ${cur}`);
    cur = join(cur, parts[i] ?? '');
  }
}

/**
 * Resolves symlinks of an existing path and checks the user may `kind` it. Returns the real path.
 * ENOENT propagates (callers map it to not found).
 */
export async function checkExisting(user: GuestUser, path: string, kind: AccessKind): Promise<string> {
  const real = await realpath(path);
  await checkAncestors(user, real);
  if (user.uid !== 0) {
    const st = await stat(real);
    const want = kind === 'read' ? R : kind === 'write' ? W : X;
    if (!allowed(user, st, want)) throw new AccessDeniedError(`permission denied: ${path}`);
  }
  return real;
}

/**
 * Checks the user may create or replace `path` (which may not exist): the nearest existing
 * ancestor must be writable and searchable, or the file itself writable when it exists.
 * Returns the path with its existing part symlink-resolved.
 */
export async function checkCreate(user: GuestUser, path: string): Promise<string> {
  const existing = await lstat(path).then(
    () => true,
    () => false,
  );
  if (existing) {
    const st = await stat(path).catch(() => undefined);
    if (st?.isDirectory()) return checkExisting(user, path, 'write');
    if (st) {
      const real = await realpath(path);
      await checkAncestors(user, real);
      if (!allowed(user, st, W)) throw new AccessDeniedError(`permission denied: ${path}`);
      return real;
    }
  }
  // Walk up to the nearest existing directory.
  let dir = dirname(path);
  const rest: string[] = [path.slice(dir.length + 1)];
  for (;;) {
    const st = await stat(dir).catch(() => undefined);
    if (st) {
      if (!st.isDirectory()) throw new NotADirectoryError(`${dir} is not a directory`);
      const real = await checkExisting(user, dir, 'search');
      if (user.uid !== 0 && !allowed(user, st, W | X))
        throw new AccessDeniedError(`permission denied: ${dir}`);
      return join(real, ...rest.reverse());
    }
    if (dir === '/') throw new AccessDeniedError('no existing ancestor');
    rest.push(dir.slice(dirname(dir).length + 1));
    dir = dirname(dir);
  }
}

export class NotADirectoryError extends Error {}

/**
 * How a request the access checks refused is answered, whatever the protocol: `denied` (the user
 * may not), `invalid` (a path that cannot be, or bad input); undefined for any other error.
 */
export function accessRefusal(e: unknown): { kind: 'denied' | 'invalid'; message: string } | undefined {
  if (e instanceof AccessDeniedError) return { kind: 'denied', message: e.message };
  if (e instanceof NotADirectoryError || e instanceof TypeError)
    return { kind: 'invalid', message: e.message };
  return undefined;
}

export const F_OK = constants.F_OK;
