/**
 * E2B's volume content API over a volume's host directory (list, make dir, stat, change mode or
 * owner, read, write, remove), every path confined by ./paths.ts. New files and directories belong
 * to the volume's owner (the unprivileged uid its sftp-server runs as, so mounted guests can change
 * them) unless the request names a uid/gid.
 */
import { constants, createReadStream, type ReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, rename, rm, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { assertFdInside, resolveInVolume, type VolumePath } from './paths.ts';

/** E2B's `VolumeEntryStat`. */
export interface VolumeEntryStat {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'unknown';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  atime: string;
  mtime: string;
  ctime: string;
  target?: string;
}

/** Owner and mode a create or update asks for. */
export interface EntryAttrs {
  uid?: number | undefined;
  gid?: number | undefined;
  mode?: number | undefined;
}

/** One volume's directory and the owner new entries get. */
export interface VolumeRoot {
  /** Real path (no links) of the volume's directory. */
  dir: string;
  owner: { uid: number; gid: number };
}

const O_NOFOLLOW_RD = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

const notFound = (p: string): KilnError =>
  new KilnError('not_found', `path "${p}" does not exist in the volume`, { details: { path: p } });

function typeOf(st: Stats): VolumeEntryStat['type'] {
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isDirectory()) return 'directory';
  if (st.isFile()) return 'file';
  return 'unknown';
}

async function entryOf(abs: string, rel: string, st: Stats): Promise<VolumeEntryStat> {
  const e: VolumeEntryStat = {
    name: rel === '/' ? '' : (rel.split('/').pop() ?? ''),
    path: rel,
    type: typeOf(st),
    size: st.size,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    atime: st.atime.toISOString(),
    mtime: st.mtime.toISOString(),
    ctime: st.ctime.toISOString(),
  };
  if (st.isSymbolicLink()) e.target = await readlink(abs);
  return e;
}

async function lstatOrNull(abs: string): Promise<Stats | null> {
  try {
    return await lstat(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR')
      return null;
    throw e;
  }
}

/** Opens an existing entry without following a link, checked to be inside the volume. */
async function openInside(v: VolumeRoot, vp: VolumePath, flags = O_NOFOLLOW_RD): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(vp.abs, flags);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw notFound(vp.rel);
    if (code === 'ELOOP') throw invalidArgument('path', `"${vp.rel}" is a symbolic link`);
    throw e;
  }
  try {
    await assertFdInside(v.dir, fh.fd);
  } catch (e) {
    await fh.close();
    throw e;
  }
  return fh;
}

export function validateAttrs(a: EntryAttrs): EntryAttrs {
  const id = (f: string, x: number | undefined): void => {
    if (x !== undefined && (!Number.isInteger(x) || x < 0 || x > 0xfffffffe))
      throw invalidArgument(f, 'must be a uid/gid number (0..4294967294)');
  };
  id('uid', a.uid);
  id('gid', a.gid);
  if (a.mode !== undefined && (!Number.isInteger(a.mode) || a.mode < 0 || a.mode > 0o7777))
    throw invalidArgument('mode', 'must be a permission mode (0..0o7777)');
  return a;
}

async function applyAttrs(fh: FileHandle, v: VolumeRoot, a: EntryAttrs, fresh: boolean): Promise<void> {
  if (fresh || a.uid !== undefined || a.gid !== undefined) {
    const st = await fh.stat();
    const uid = a.uid ?? (fresh ? v.owner.uid : st.uid);
    const gid = a.gid ?? (fresh ? v.owner.gid : st.gid);
    if (uid !== st.uid || gid !== st.gid) await fh.chown(uid, gid);
  }
  if (a.mode !== undefined) await fh.chmod(a.mode);
}

export async function statPath(v: VolumeRoot, p: string): Promise<VolumeEntryStat> {
  const vp = await resolveInVolume(v.dir, p, { allowLinkLast: true });
  const st = await lstatOrNull(vp.abs);
  if (!st) throw notFound(vp.rel);
  return entryOf(vp.abs, vp.rel, st);
}

/** The entries under directory `p`, `depth` levels deep (1: its children only). */
export async function listDir(v: VolumeRoot, p: string, depth = 1): Promise<VolumeEntryStat[]> {
  if (!Number.isInteger(depth) || depth < 1 || depth > 64) throw invalidArgument('depth', 'must be 1..64');
  const vp = await resolveInVolume(v.dir, p);
  const fh = await openInside(v, vp, O_NOFOLLOW_RD | constants.O_DIRECTORY).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw invalidArgument('path', `"${vp.rel}" is not a directory`);
    throw e;
  });
  await fh.close();
  const out: VolumeEntryStat[] = [];
  const walk = async (abs: string, rel: string, level: number): Promise<void> => {
    for (const name of (await readdir(abs)).sort()) {
      const a = join(abs, name);
      const r = rel === '/' ? `/${name}` : `${rel}/${name}`;
      const st = await lstatOrNull(a);
      if (!st) continue;
      out.push(await entryOf(a, r, st));
      // Links are listed, never followed.
      if (st.isDirectory() && level < depth) await walk(a, r, level + 1);
    }
  };
  await walk(vp.abs, vp.rel, 1);
  return out;
}

/** Makes each missing directory of `parts` (as the volume's owner), checked inside the volume. */
async function makeDirs(v: VolumeRoot, parts: string[], last: EntryAttrs): Promise<void> {
  for (let i = 1; i <= parts.length; i++) {
    const vp = await resolveInVolume(v.dir, parts.slice(0, i).join('/'));
    let fresh = true;
    try {
      await mkdir(vp.abs, { mode: 0o755 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      fresh = false;
    }
    const fh = await openInside(v, vp, O_NOFOLLOW_RD | constants.O_DIRECTORY);
    try {
      if (fresh) await applyAttrs(fh, v, i === parts.length ? last : {}, true);
    } finally {
      await fh.close();
    }
  }
}

/** Makes directory `p` and missing parents; an existing one is `already_exists` unless `force`. */
export async function makeDir(
  v: VolumeRoot,
  p: string,
  a: EntryAttrs & { force?: boolean | undefined },
): Promise<VolumeEntryStat> {
  validateAttrs(a);
  const vp = await resolveInVolume(v.dir, p);
  if (vp.parts.length === 0) throw invalidArgument('path', 'the volume root exists already');
  const st = await lstatOrNull(vp.abs);
  if (st && !a.force)
    throw new KilnError('already_exists', `path "${vp.rel}" already exists in the volume`, {
      details: { path: vp.rel },
    });
  if (st && !st.isDirectory()) throw invalidArgument('path', `"${vp.rel}" exists and is not a directory`);
  await makeDirs(v, vp.parts, a);
  return statPath(v, vp.rel);
}

/** Changes the mode and/or owner of `p` (a link itself is refused). */
export async function updatePath(v: VolumeRoot, p: string, a: EntryAttrs): Promise<VolumeEntryStat> {
  validateAttrs(a);
  const vp = await resolveInVolume(v.dir, p);
  const fh = await openInside(v, vp);
  try {
    await applyAttrs(fh, v, a, false);
  } finally {
    await fh.close();
  }
  return statPath(v, vp.rel);
}

/** A stream of regular file `p`'s bytes (opened and checked before it is returned). */
export async function readFileStream(
  v: VolumeRoot,
  p: string,
): Promise<{ size: number; stream: ReadStream }> {
  const vp = await resolveInVolume(v.dir, p);
  const fh = await openInside(v, vp);
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw invalidArgument('path', `"${vp.rel}" is not a regular file`);
  }
  return { size: st.size, stream: createReadStream('', { fd: fh, autoClose: true }) };
}

/**
 * Writes `body` to file `p` (parents made as needed): into a temporary file beside it, renamed
 * over the target once complete, so a failed upload leaves no partial file.
 */
export async function writeFileFrom(
  v: VolumeRoot,
  p: string,
  body: Readable,
  a: EntryAttrs & { force?: boolean | undefined },
): Promise<VolumeEntryStat> {
  validateAttrs(a);
  const vp = await resolveInVolume(v.dir, p);
  if (vp.parts.length === 0) throw invalidArgument('path', 'names the volume root, not a file');
  const st = await lstatOrNull(vp.abs);
  if (st?.isDirectory()) throw invalidArgument('path', `"${vp.rel}" is a directory`);
  await makeDirs(v, vp.parts.slice(0, -1), {});
  const tmp = join(dirname(vp.abs), `.kiln-upload-${randomBytes(6).toString('hex')}`);
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  try {
    await assertFdInside(v.dir, fh.fd);
    await applyAttrs(fh, v, a, true);
    for await (const chunk of body) await fh.write(chunk as Buffer);
    await fh.sync();
    await fh.close();
    await rename(tmp, vp.abs);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  return statPath(v, vp.rel);
}

/** Removes `p` (a directory with everything in it; a link itself, never its target). */
export async function removePath(v: VolumeRoot, p: string): Promise<void> {
  const vp = await resolveInVolume(v.dir, p, { allowLinkLast: true });
  if (vp.parts.length === 0)
    throw invalidArgument('path', 'names the volume root; delete the volume instead');
  if (!(await lstatOrNull(vp.abs))) throw notFound(vp.rel);
  await rm(vp.abs, { recursive: true, force: false });
}
