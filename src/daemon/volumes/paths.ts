/**
 * Path confinement for the volume content API. A volume's directory is written by hostile guests
 * (through their mounts), so a path named by a content request is resolved component by component
 * with lstat: `..` is refused, any symbolic link on the way is refused (a guest could point one at
 * the host's files), and what is finally opened is checked again through /proc/self/fd (a guest
 * that swaps a directory for a link between the walk and the open is caught there).
 */
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError, invalidArgument } from '../../core/errors.ts';

/** A content path resolved inside its volume. */
export interface VolumePath {
  /** The absolute host path. */
  abs: string;
  /** The path as the API shows it: `/` + the components (the volume's root is `/`). */
  rel: string;
  /** The components (empty for the root). */
  parts: string[];
}

/**
 * Splits an API path (`a/b`, `/a/b`, `./a//b/`) into its components, refusing `..`, NUL bytes
 * and over-long paths with `invalid_argument` naming `field`.
 */
export function splitVolumePath(field: string, p: string): string[] {
  if (p.includes('\0')) throw invalidArgument(field, 'must not contain NUL bytes');
  if (p.length > 4096) throw invalidArgument(field, 'is longer than 4096 characters');
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..'))
    throw invalidArgument(field, `"${p}" leaves the volume ("..") ; give a path inside the volume`);
  for (const x of parts)
    if (Buffer.byteLength(x) > 255)
      throw invalidArgument(field, `component "${x.slice(0, 40)}…" is too long`);
  return parts;
}

const isMissing = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * Resolves `p` inside the volume directory `root`: every existing component must be a real
 * directory (the last one may be anything but a symbolic link, unless `allowLinkLast`, for stat
 * and remove of a link itself). Components that do not exist are allowed (for creates); the
 * caller decides what a missing path means.
 */
export async function resolveInVolume(
  root: string,
  p: string,
  o: { field?: string; allowLinkLast?: boolean } = {},
): Promise<VolumePath> {
  const field = o.field ?? 'path';
  const parts = splitVolumePath(field, p);
  let cur = root;
  for (let i = 0; i < parts.length; i++) {
    cur = join(cur, parts[i] ?? '');
    let st;
    try {
      st = await lstat(cur);
    } catch (e) {
      if (isMissing(e)) break;
      throw e;
    }
    const last = i === parts.length - 1;
    if (st.isSymbolicLink() && !(last && o.allowLinkLast))
      throw new KilnError(
        'invalid_argument',
        `${field} "${p}" goes through a symbolic link ("${parts.slice(0, i + 1).join('/')}"); the volume content API does not follow links`,
        { details: { field } },
      );
    if (!last && !st.isDirectory() && !st.isSymbolicLink())
      throw new KilnError(
        'invalid_argument',
        `${field} "${p}": "${parts.slice(0, i + 1).join('/')}" is not a directory`,
        {
          details: { field },
        },
      );
  }
  return { abs: join(root, ...parts), rel: '/' + parts.join('/'), parts };
}

/**
 * Checks that open file descriptor `fd` is `root` or inside it (what /proc/self/fd says it is),
 * else `permission_denied`: the walk raced with a guest that replaced a directory by a link.
 */
export async function assertFdInside(root: string, fd: number): Promise<void> {
  const real = await readlink(`/proc/self/fd/${fd}`);
  if (real !== root && !real.startsWith(root.endsWith('/') ? root : root + '/'))
    throw new KilnError(
      'permission_denied',
      'the path left the volume while it was opened (a link was swapped in)',
    );
}
