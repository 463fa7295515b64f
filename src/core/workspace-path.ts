/**
 * Where a workspace lives in the guest: inside the sandbox user's home, never the home itself,
 * never outside it (checked on the normalised path here; the guest checks again that no parent is
 * a symbolic link before anything is moved into place).
 */
import { posix } from 'node:path';
import { invalidArgument } from './errors.ts';

/** The sandbox user workspaces belong to, and its home (kiln images, like E2B's templates). */
export const WORKSPACE_USER = 'user';
export const WORKSPACE_HOME = '/home/user';
/** Where the guest keeps the path of the last push (export's default). */
export const LAST_PUSH_FILE = `${WORKSPACE_HOME}/.kiln-workspace`;

const BAD_CHARS = /[\0\n\r]/;

/**
 * The guest path of a push: `guestPath` normalised, or `<home>/<repoName>`. `invalid_argument`
 * for a relative path, one that escapes the home (`..`, another directory) or is the home itself.
 */
export function workspacePath(guestPath: string | undefined, repoName: string | undefined): string {
  if (guestPath === undefined || guestPath === '') {
    const n = repoName ?? '';
    if (n === '' || n === '.' || n === '..' || n.includes('/') || BAD_CHARS.test(n))
      throw invalidArgument('name', `"${n}" cannot name a directory; give --guest-path`);
    return `${WORKSPACE_HOME}/${n}`;
  }
  if (BAD_CHARS.test(guestPath)) throw invalidArgument('guestPath', 'contains a NUL or a line break');
  if (!guestPath.startsWith('/'))
    throw invalidArgument(
      'guestPath',
      `"${guestPath}" is relative: give an absolute path under ${WORKSPACE_HOME}`,
    );
  const p = posix.normalize(guestPath).replace(/\/+$/, '');
  if (!p.startsWith(`${WORKSPACE_HOME}/`))
    throw invalidArgument(
      'guestPath',
      `"${guestPath}" is outside the sandbox user's home: give a path under ${WORKSPACE_HOME}/`,
    );
  return p;
}

/** The staging directory of a push, beside its target (same filesystem: the final step is a rename). */
export const stagePath = (target: string, opId: string): string =>
  `${posix.dirname(target)}/.kiln-ws-${opId.replace(/[^\w-]/g, '')}`;

/** `s` as one single-quoted shell word. */
export const sh = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
