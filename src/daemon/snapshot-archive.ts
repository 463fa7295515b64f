/**
 * A snapshot as one portable archive (computer-host's download/upload path): an uncompressed
 * tar holding a manifest and every file a restore needs, the disk flattened to one standalone
 * layer and the kernel and initrd included, so the archive restores on a host that never had
 * the template. Every file is listed in the manifest with its size and SHA-256 and verified on
 * import; anything else in the archive (other names, links, directories, `..`) is refused.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Parser, create, type ReadEntry } from 'tar';
import type { ArtifactRecord } from '../core/domain.ts';
import { KilnError, invalidArgument } from '../core/errors.ts';

export const MANIFEST = 'kiln-snapshot.json';
export const ARCHIVE_FORMAT = 1;

/** The files of an archive, by kind: every one is required. */
export const ARCHIVE_FILES: Record<'memory' | 'state' | 'disk' | 'kernel' | 'initrd', string> = {
  memory: 'memory',
  state: 'state',
  disk: 'disk.qcow2',
  kernel: 'vmlinuz',
  initrd: 'initrd.img',
};

export interface ArchiveManifest {
  format: number;
  snapshot: {
    id: string;
    name: string | null;
    memoryMiB: number;
    vcpus: number;
    guestToken: string | null;
    /** The machine revision its memory was saved from; absent in archives of older kilnds: legacy. */
    machine?: number;
    templateName: string;
    imageKey: string;
    createdAt: string;
  };
  files: ArtifactRecord[];
}

/** Writes the archive of the files in `dir` (named as in ARCHIVE_FILES) with `manifest`. */
export function packArchive(dir: string): Readable {
  return create({ cwd: dir, portable: true, noDirRecurse: true }, [
    MANIFEST,
    ...Object.values(ARCHIVE_FILES),
  ]) as unknown as Readable;
}

const corrupt = (why: string): KilnError =>
  invalidArgument('archive', `is not a valid kiln snapshot archive: ${why}`);

/**
 * Reads an archive from `input` into the empty directory `dir` and verifies it: only the
 * manifest and the files it lists, plain files only, each with the size and SHA-256 the
 * manifest gives. Returns the manifest. On any error `dir` may hold partial files: the caller
 * removes it.
 */
export async function unpackArchive(input: Readable, dir: string): Promise<ArchiveManifest> {
  const seen = await extractEntries(input, dir);
  if (!seen.has(MANIFEST)) throw corrupt(`it has no ${MANIFEST}`);
  const m = await readManifest(dir);
  const files = manifestFiles(m.files);
  for (const [kind, name] of Object.entries(ARCHIVE_FILES)) {
    const want = files.find((f) => f.kind === kind);
    if (want?.path !== name) throw corrupt(`the manifest lists no ${kind} file "${name}"`);
    const got = seen.get(name);
    if (!got) throw corrupt(`${name} is missing (the archive may be truncated)`);
    const onDisk = (await stat(join(dir, name))).size;
    if (onDisk !== got.size) throw corrupt(`${name} was written short (${onDisk} of ${got.size} bytes)`);
    if (got.size !== want.size)
      throw corrupt(`${name} has ${got.size} bytes, the manifest says ${want.size} (truncated?)`);
    if (got.sha256 !== want.sha256) throw corrupt(`${name} does not match its SHA-256 (corrupted)`);
  }
  return { ...m, files };
}

/**
 * Writes the archive's entries into `dir`, hashing each as it goes; refuses (after draining the
 * input) any entry that is not the manifest or a listed file, appears twice, or is not a plain
 * file. Resolves with each written file's size and SHA-256.
 */
async function extractEntries(
  input: Readable,
  dir: string,
): Promise<Map<string, { size: number; sha256: string }>> {
  const allowed = new Set([MANIFEST, ...Object.values(ARCHIVE_FILES)]);
  const seen = new Map<string, { size: number; sha256: string }>();
  const writes: Promise<void>[] = [];
  let refused: KilnError | undefined;
  const parser = new Parser({
    strict: true,
    onReadEntry: (entry: ReadEntry) => {
      const p = entry.path.replace(/^\.\//, '');
      if (refused) {
        entry.resume();
        return;
      }
      if (!allowed.has(p) || seen.has(p)) {
        refused = corrupt(
          seen.has(p)
            ? `entry "${entry.path}" appears twice`
            : `entry "${entry.path}" is not part of a kiln snapshot (expected only ${[...allowed].join(', ')})`,
        );
        entry.resume();
        return;
      }
      if (entry.type !== 'File') {
        refused = corrupt(`entry "${entry.path}" is a ${entry.type}, not a plain file`);
        entry.resume();
        return;
      }
      writes.push(
        writeEntry(entry, join(dir, p)).then((got) => {
          seen.set(p, got);
        }),
      );
    },
  });
  try {
    await pipeline(input, parser as unknown as NodeJS.WritableStream);
    await Promise.all(writes);
  } catch (e) {
    if (refused) throw refused;
    throw corrupt(`it is truncated or damaged (${(e as Error).message})`);
  }
  if (refused) throw refused;
  return seen;
}

/** Writes one entry to the new file `path`, hashing it; resolves once the file is written. */
function writeEntry(entry: ReadEntry, path: string): Promise<{ size: number; sha256: string }> {
  const h = createHash('sha256');
  let size = 0;
  const out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
  // One consumer writes and hashes, pausing the entry while the file catches up.
  entry.on('data', (c: Buffer) => {
    h.update(c);
    size += c.length;
    if (!out.write(c)) {
      entry.pause();
      out.once('drain', () => {
        entry.resume();
      });
    }
  });
  entry.on('end', () => {
    out.end();
  });
  return new Promise((resolve, reject) => {
    out.once('error', reject);
    out.once('finish', () => {
      resolve({ size, sha256: h.digest('hex') });
    });
  });
}

/** The manifest in `dir`, checked for its format and the snapshot's fields. */
async function readManifest(dir: string): Promise<ArchiveManifest> {
  let m: ArchiveManifest;
  try {
    m = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as ArchiveManifest;
  } catch (e) {
    throw corrupt(`${MANIFEST} is not JSON (${(e as Error).message})`);
  }
  if (m.format !== ARCHIVE_FORMAT) throw corrupt(`format ${String(m.format)} is not ${ARCHIVE_FORMAT}`);
  const snap = (m as Partial<ArchiveManifest>).snapshot;
  if (
    typeof snap !== 'object' ||
    typeof snap.id !== 'string' ||
    typeof snap.templateName !== 'string' ||
    typeof snap.imageKey !== 'string' ||
    (snap.name !== null && typeof snap.name !== 'string') ||
    (snap.guestToken !== null && typeof snap.guestToken !== 'string') ||
    !Array.isArray(m.files)
  )
    throw corrupt(`${MANIFEST} lacks the snapshot's id, name, template, image key, token or file list`);
  return m;
}

const SHA256 = /^[0-9a-f]{64}$/;

/**
 * The manifest's file list, checked before anything reads it: exactly the files of
 * ARCHIVE_FILES, each kind once, each under its own name (no other path, no `..`, no absolute
 * path), a size and a SHA-256. Only those fields are kept, so nothing else a manifest carries
 * can reach the snapshot's record.
 */
export function manifestFiles(list: unknown[]): ArtifactRecord[] {
  const out: ArtifactRecord[] = [];
  const kinds = Object.keys(ARCHIVE_FILES);
  for (const [i, raw] of list.entries()) {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw corrupt(`manifest file ${i} is not an object`);
    const f = raw as Record<string, unknown>;
    const { kind, path, size, sha256 } = f;
    if (typeof kind !== 'string' || !kinds.includes(kind))
      throw corrupt(`manifest file ${i} has kind ${JSON.stringify(kind)}, not one of ${kinds.join(', ')}`);
    const k = kind as keyof typeof ARCHIVE_FILES;
    if (out.some((x) => x.kind === k)) throw corrupt(`the manifest lists the ${k} file twice`);
    if (typeof path !== 'string') throw corrupt(`the manifest's ${k} file has no path`);
    if (path.startsWith('/') || path.split(/[\\/]/).includes('..'))
      throw corrupt(`the manifest's ${k} file path "${path}" leaves the snapshot (absolute or ..)`);
    if (path !== ARCHIVE_FILES[k])
      throw corrupt(`the manifest's ${k} file must be "${ARCHIVE_FILES[k]}", not "${path}"`);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
      throw corrupt(`the manifest's ${k} file has no valid size`);
    if (typeof sha256 !== 'string' || !SHA256.test(sha256))
      throw corrupt(`the manifest's ${k} file has no valid SHA-256`);
    out.push({ kind: k, path, size, sha256 });
  }
  if (out.length !== kinds.length)
    throw corrupt(
      `the manifest lists ${out.length} files; a snapshot has exactly ${kinds.length} (${kinds.join(', ')})`,
    );
  return out;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/** The record (size, SHA-256) of file `path` in `dir`. */
export async function artifact(
  dir: string,
  kind: ArtifactRecord['kind'],
  path: string,
): Promise<ArtifactRecord> {
  const p = join(dir, path);
  return { kind, path, size: (await stat(p)).size, sha256: await sha256File(p) };
}
