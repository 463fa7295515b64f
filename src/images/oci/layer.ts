/**
 * Applies an image layer (a tar, as OCI's image-layer spec defines it) onto a root directory.
 *
 * The layer is hostile until proven otherwise. Every path is resolved inside `root` the way the
 * guest will see it (a symlink in a parent is followed, its target taken relative to `root`, `..`
 * stops at `root`), so no entry can write, link or remove outside `root`; entry names with `..`
 * are refused outright. Whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers put
 * there. All file operations here are synchronous: each entry is applied completely, in archive
 * order, before the next one is read.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { pullError } from './auth.ts';
import type { Compression } from './manifest.ts';

export interface LayerStats {
  entries: number;
  whiteouts: number;
  /** Entries not applied (devices, FIFOs): they are named here. */
  skipped: string[];
}

const MAX_LINKS = 40;
const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** The path of an archive entry, relative and clean; `..` anywhere or NUL is refused. */
export function cleanEntryPath(p: string): string {
  if (p.includes('\0')) throw pullError(`layer entry ${JSON.stringify(p)} has a NUL in its name`);
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw pullError(`layer entry "${p}" climbs out of the root with ".."`);
  return parts.join('/');
}

/**
 * The host path of `rel` inside `root`, following symlinks in its parents (and in its last part
 * with `followLast`) as the guest would, but never above `root`.
 */
export function resolveInRoot(root: string, rel: string, followLast = false): string {
  let parts = rel.split('/').filter((s) => s !== '' && s !== '.');
  const out: string[] = [];
  let links = 0;
  while (parts.length > 0) {
    const p = parts.shift() as string;
    if (p === '..') {
      out.pop();
      continue;
    }
    if (parts.length === 0 && !followLast) {
      out.push(p);
      break;
    }
    const host = join(root, ...out, p);
    const st = fs.lstatSync(host, { throwIfNoEntry: false });
    if (st?.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw pullError(`too many levels of symlinks resolving "${rel}" in the image`);
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) out.length = 0;
      parts = [...target.split('/').filter((s) => s !== '' && s !== '.'), ...parts];
      continue;
    }
    out.push(p);
  }
  return join(root, ...out);
}

/**
 * `mkdir -p` whose new directories get exactly `mode` (not `mode` less the process's umask:
 * kilnd runs with 077, and the guest's directories must not depend on it). `path` must be a
 * `resolveInRoot` result (no symlinks on the way).
 */
export function mkdirAll(path: string, mode = 0o755): void {
  const missing: string[] = [];
  for (let p = path; !fs.existsSync(p); p = dirname(p)) missing.push(p);
  fs.mkdirSync(path, { recursive: true, mode });
  for (const p of missing) fs.chmodSync(p, mode);
}

/** Removes whatever is at `path` (not following a symlink there). */
function removeAt(path: string): void {
  fs.rmSync(path, { recursive: true, force: true });
}

/** Applies one layer's entries; see the module comment. */
class LayerWriter {
  readonly stats: LayerStats = { entries: 0, whiteouts: 0, skipped: [] };
  /** Paths this layer wrote, and their parents: an opaque whiteout keeps them. */
  readonly #written = new Set<string>();
  readonly #root: string;
  constructor(root: string) {
    this.#root = root;
  }

  apply(e: ReadEntry): void {
    const rel = cleanEntryPath(e.path);
    this.stats.entries++;
    if (rel === '') return; // the root itself keeps kiln's mode and owner
    const name = basename(rel);
    const dirRel = dirname(rel) === '.' ? '' : dirname(rel);
    if (name === OPAQUE) {
      this.stats.whiteouts++;
      this.#opaque(dirRel);
      return;
    }
    if (name.startsWith(WH)) {
      this.stats.whiteouts++;
      const gone = name.slice(WH.length);
      const goneRel = dirRel ? `${dirRel}/${gone}` : gone;
      if (gone === '' || gone === '.' || gone === '..')
        throw pullError(`layer entry "${e.path}" is a bad whiteout`);
      if (!this.#written.has(goneRel)) removeAt(join(resolveInRoot(this.#root, dirRel, true), gone));
      return;
    }
    this.#mark(rel);
    const parent = resolveInRoot(this.#root, dirRel, true);
    mkdirAll(parent);
    this.#write(e, join(parent, name));
  }

  #write(e: ReadEntry, dest: string): void {
    const mode = (e.mode ?? 0o644) & 0o7777;
    const uid = e.uid ?? 0;
    const gid = e.gid ?? 0;
    const mtime = e.mtime ?? new Date(0);
    const existing = fs.lstatSync(dest, { throwIfNoEntry: false });
    switch (e.type) {
      case 'Directory':
        if (existing && !existing.isDirectory()) removeAt(dest);
        if (!existing?.isDirectory()) fs.mkdirSync(dest, { mode: 0o700 });
        fs.lchownSync(dest, uid, gid);
        fs.chmodSync(dest, mode);
        return;
      case 'File':
      case 'OldFile':
      case 'ContiguousFile': {
        if (existing) removeAt(dest);
        const fd = fs.openSync(
          dest,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
          0o600,
        );
        fs.fchownSync(fd, uid, gid);
        fs.fchmodSync(fd, mode);
        e.on('data', (c: Buffer) => fs.writeSync(fd, c));
        e.on('end', () => {
          fs.futimesSync(fd, mtime, mtime);
          fs.closeSync(fd);
        });
        return;
      }
      case 'SymbolicLink':
        if (existing) removeAt(dest);
        fs.symlinkSync(e.linkpath ?? '', dest);
        fs.lchownSync(dest, uid, gid);
        fs.lutimesSync(dest, mtime, mtime);
        return;
      case 'Link': {
        // The link's source is another archive path, resolved inside the root like any entry.
        const src = resolveInRoot(this.#root, cleanEntryPath(e.linkpath ?? ''));
        const st = fs.lstatSync(src, { throwIfNoEntry: false });
        if (!st || st.isDirectory())
          throw pullError(
            `layer entry "${e.path}" hard-links to "${e.linkpath ?? ''}", which is ${st ? 'a directory' : 'missing'}`,
          );
        if (existing) removeAt(dest);
        fs.linkSync(src, dest);
        return;
      }
      default:
        // Devices and FIFOs: /dev is a devtmpfs in the guest; Node cannot mknod.
        this.stats.skipped.push(`${e.path} (${e.type})`);
    }
  }

  #mark(rel: string): void {
    for (let p = rel; p !== '' && !this.#written.has(p); p = dirname(p) === '.' ? '' : dirname(p))
      this.#written.add(p);
  }

  /** `.wh..wh..opq` in `dirRel`: empties it of everything lower layers put there. */
  #opaque(dirRel: string): void {
    const dir = resolveInRoot(this.#root, dirRel, true);
    const clean = (host: string, rel: string): void => {
      for (const child of fs.readdirSync(host, { withFileTypes: true })) {
        const childRel = rel ? `${rel}/${child.name}` : child.name;
        if (!this.#written.has(childRel)) removeAt(join(host, child.name));
        else if (child.isDirectory()) clean(join(host, child.name), childRel);
      }
    };
    if (fs.lstatSync(dir, { throwIfNoEntry: false })?.isDirectory()) clean(dir, dirRel);
  }
}

/** The decompressor for a layer's media type (Node 24's zlib has zstd). */
export function decompressor(c: Compression): Transform | undefined {
  if (c === 'gzip') return zlib.createGunzip();
  if (c === 'zstd') return zlib.createZstdDecompress();
  return undefined;
}

/**
 * Unpacks the layer blob `input` (compressed as `compression`) onto `root`; the uncompressed
 * tar must hash to `diffId` (the image config's `rootfs.diff_ids` entry).
 */
export async function applyLayer(
  root: string,
  input: Readable,
  o: { compression: Compression; diffId: string; signal?: AbortSignal | undefined },
): Promise<LayerStats> {
  const w = new LayerWriter(root);
  let failure: Error | undefined;
  const parser = new Parser({
    strict: true,
    onReadEntry: (e: ReadEntry) => {
      if (failure === undefined) {
        try {
          w.apply(e);
        } catch (err) {
          failure = err instanceof Error ? err : new Error(String(err));
        }
      }
      e.resume();
    },
  });
  const h = createHash('sha256');
  const hash = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      cb(null, chunk);
    },
  });
  const unzip = decompressor(o.compression);
  const stages: NodeJS.ReadWriteStream[] = unzip ? [unzip, hash] : [hash];
  try {
    await pipeline([input, ...stages, parser as unknown as NodeJS.WritableStream], { signal: o.signal });
  } catch (e) {
    if (failure !== undefined) throw failure;
    if (o.signal?.aborted) throw e;
    throw pullError(
      `a layer is not a valid ${o.compression === 'none' ? '' : `${o.compression} `}tar: ${(e as Error).message}`,
      e,
    );
  }
  if (failure !== undefined) throw failure;
  const got = `sha256:${h.digest('hex')}`;
  if (got !== o.diffId)
    throw pullError(`a layer unpacks to ${got}, the config says ${o.diffId} (tampered or corrupt)`);
  return w.stats;
}
