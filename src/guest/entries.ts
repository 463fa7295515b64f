import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, join } from 'node:path';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { FileType, type EntryInfoSchema } from '../core/envd/filesystem/filesystem_pb.js';
import { idNames } from './users.ts';
import { readMetadata } from './xattrs.ts';

export type EntryInit = MessageInitShape<typeof EntryInfoSchema>;

/** Go's `FileMode.String()`, which E2B clients see as `permissions` (e.g. `-rw-r--r--`, `drwxr-xr-x`). */
export function goPermissions(st: Stats): string {
  let t = '-';
  if (st.isDirectory()) t = 'd';
  else if (st.isSymbolicLink()) t = 'L';
  else if (st.isFIFO()) t = 'p';
  else if (st.isSocket()) t = 'S';
  else if (st.isCharacterDevice()) t = 'Dc';
  else if (st.isBlockDevice()) t = 'D';
  const rwx = 'rwxrwxrwx';
  let perm = '';
  for (let i = 0; i < 9; i++) perm += st.mode & (1 << (8 - i)) ? rwx.charAt(i) : '-';
  const special =
    (st.mode & 0o4000 ? 'u' : '') + (st.mode & 0o2000 ? 'g' : '') + (st.mode & 0o1000 ? 't' : '');
  return (t === '-' ? special || '-' : t + special) + perm;
}

let names: Awaited<ReturnType<typeof idNames>> | undefined;
let namesAt = 0;
async function nameMaps(): Promise<Awaited<ReturnType<typeof idNames>>> {
  if (!names || Date.now() - namesAt > 5000) {
    names = await idNames();
    namesAt = Date.now();
  }
  return names;
}

/**
 * EntryInfo of `path` as envd reports it: from lstat; for a symlink, type and mode of its target
 * and `symlinkTarget` the resolved path (type unspecified when broken); `metadata` from the
 * file's `user.e2b.*` extended attributes.
 */
export async function entryInfo(path: string): Promise<EntryInit> {
  const info = await statEntry(path);
  const [metadata] = await readMetadata([path]);
  return metadata ? { ...info, metadata } : info;
}

/** entryInfo without the metadata (listEntries reads that for all entries at once). */
async function statEntry(path: string): Promise<EntryInit> {
  const lst = await lstat(path);
  let st: Stats = lst;
  let symlinkTarget: string | undefined;
  let type: FileType;
  if (lst.isSymbolicLink()) {
    symlinkTarget = await realpath(path).catch(() => undefined);
    const target = await stat(path).catch(() => undefined);
    if (target) st = target;
    type = !target ? FileType.UNSPECIFIED : target.isDirectory() ? FileType.DIRECTORY : FileType.FILE;
  } else {
    type = lst.isDirectory() ? FileType.DIRECTORY : FileType.FILE;
  }
  const n = await nameMaps();
  return {
    name: basename(path) || '/',
    type,
    path,
    size: BigInt(st.size),
    mode: st.mode & 0o777,
    permissions: goPermissions(lst),
    owner: n.users.get(lst.uid) ?? String(lst.uid),
    group: n.groups.get(lst.gid) ?? String(lst.gid),
    modifiedTime: timestampFromMs(Math.floor(lst.mtimeMs)),
    ...(symlinkTarget === undefined ? {} : { symlinkTarget }),
  };
}

/** Entries below `dir` down to `depth` levels (1 = direct children); vanished entries are skipped. */
export async function listEntries(dir: string, shownAs: string, depth: number): Promise<EntryInit[]> {
  const out: EntryInit[] = [];
  const reals: string[] = [];
  const walk = async (real: string, shown: string, level: number): Promise<void> => {
    const names = await readdir(real).catch(() => [] as string[]);
    names.sort();
    for (const name of names) {
      const info = await statEntry(join(real, name)).catch(() => undefined);
      if (!info) continue;
      info.path = join(shown, name);
      out.push(info);
      reals.push(join(real, name));
      if (level < depth && info.type === FileType.DIRECTORY && info.symlinkTarget === undefined) {
        await walk(join(real, name), join(shown, name), level + 1);
      }
    }
  };
  await walk(dir, shownAs, 1);
  const metadata = await readMetadata(reals);
  return out.map((info, i) => {
    const md = metadata[i];
    return md ? { ...info, metadata: md } : info;
  });
}
