import { createReadStream, createWriteStream } from 'node:fs';
import { chown, rename, rm, stat, statfs } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { createGunzip, createGzip } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import busboy from 'busboy';
import { accessRefusal, checkCreate, checkExisting, resolveUserPath } from './access.ts';
import { mkdirFor } from './filesystem-service.ts';
import { sendError, sendJson } from './http-util.ts';
import type { GuestUser } from './users.ts';
import { expectUploadRename, uploadDone, uploadTempName } from './watch-hub.ts';
import { metadataFromHeaders, writeMetadata, xattrUnsupported, type Metadata } from './xattrs.ts';

export interface FilesDeps {
  user: GuestUser;
  workdir: string | undefined;
}

/** A part without a filename reaches the agent as a form field, read into memory: this caps it. */
const FIELD_PART_MAX = 64 * 2 ** 20;

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function statusOf(e: unknown, path: string): HttpError {
  if (e instanceof HttpError) return e;
  const refused = accessRefusal(e);
  if (refused) return new HttpError(refused.kind === 'denied' ? 403 : 400, refused.message);
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new HttpError(404, `path '${path}' does not exist`);
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return new HttpError(507, `not enough disk space to write '${path}'`);
  if (code === 'EISDIR') return new HttpError(400, `path '${path}' is a directory`);
  if (code === 'ENOTDIR') return new HttpError(400, `path '${path}': a parent is not a directory`);
  if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR')
    return new HttpError(400, `the gzip body is corrupt: ${(e as Error).message}`);
  return new HttpError(500, `${path}: ${(e as Error).message}`);
}

const resolve = (p: string, d: FilesDeps): string => {
  try {
    return resolveUserPath(p, d.user, d.workdir);
  } catch (e) {
    throw new HttpError(400, (e as Error).message);
  }
};

/** GET /files: the file's bytes (gzip only when the client asked for exactly that). */
export async function getFile(
  req: IncomingMessage,
  res: ServerResponse,
  query: URLSearchParams,
  d: FilesDeps,
): Promise<void> {
  const path = resolve(query.get('path') ?? '', d);
  try {
    const real = await checkExisting(d.user, path, 'read');
    const st = await stat(real);
    if (st.isDirectory()) throw new HttpError(400, `path '${path}' is a directory`);
    const gzip = (req.headers['accept-encoding'] ?? '').trim() === 'gzip';
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'content-disposition': `inline; filename=${encodeURIComponent(basename(path))}`,
      vary: 'Accept-Encoding',
    };
    if (gzip) headers['content-encoding'] = 'gzip';
    else headers['content-length'] = st.size;
    res.writeHead(200, headers);
    const src = createReadStream(real);
    await (gzip ? pipeline(src, createGzip({ level: 1 }), res) : pipeline(src, res));
  } catch (e) {
    const h = statusOf(e, path);
    sendError(res, h.status, h.message);
  }
}

interface Written {
  name: string;
  path: string;
  type: 'file';
  metadata?: Metadata;
}

/** Sets the upload's metadata on its temporary file; false where the filesystem keeps no xattrs (as envd). */
async function setMetadata(file: string, md: Metadata): Promise<boolean> {
  if (Object.keys(md).length === 0) return false; // a new file has none: nothing to replace
  try {
    await writeMetadata(file, md);
    return true;
  } catch (e) {
    if (xattrUnsupported(e)) return false;
    throw e;
  }
}

async function statfsNearest(dir: string): Promise<{ bfree: number; bsize: number } | undefined> {
  for (let d = dir; ; d = dirname(d)) {
    const fs = await statfs(d).catch(() => undefined);
    if (fs) return fs;
    if (d === '/') return undefined;
  }
}

/**
 * Copies an upload body into a new file. Unlike `pipeline`, a failure (ENOSPC, bad gzip) does not
 * destroy the body: it is drained instead, so the request (and a multipart parser reading it)
 * runs to its end and the client gets an answer rather than a reset connection.
 */
function copyInto(body: Readable, file: string, gzip: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file, { mode: 0o644 });
    const gunzip = gzip ? createGunzip() : undefined;
    let failed = false;
    const fail = (e: Error): void => {
      if (failed) return;
      failed = true;
      body.unpipe();
      gunzip?.unpipe();
      body.resume();
      out.destroy();
      reject(e);
    };
    out.on('error', fail);
    out.on('finish', () => {
      if (!failed) resolve();
    });
    body.on('error', fail);
    if (gunzip) {
      gunzip.on('error', fail);
      body.pipe(gunzip).pipe(out);
    } else {
      body.pipe(out);
    }
  });
}

/**
 * Writes one upload to `path` for the user: into a temp file beside it, renamed over the target
 * only when complete, so an interrupted or failed upload (ENOSPC) never leaves a partial file
 * that looks finished. Parents are created and, like the file, owned by the user.
 */
async function writeOne(
  path: string,
  body: Readable,
  o: { gzip: boolean; metadata: Metadata },
  d: FilesDeps,
): Promise<Written> {
  let target: string;
  let existing;
  try {
    target = await checkCreate(d.user, path);
    existing = await stat(target).catch(() => undefined);
    if (existing?.isDirectory()) throw new HttpError(400, `path '${path}' is a directory`);
    await mkdirFor(d.user, dirname(target));
  } catch (e) {
    body.resume(); // drain it, or the multipart parser (and the request) stalls
    throw e;
  }
  const tmp = join(dirname(target), uploadTempName(target, randomBytes(6).toString('hex')));
  let kept: boolean;
  try {
    await copyInto(body, tmp, o.gzip);
    await chown(tmp, d.user.uid, d.user.gid);
    kept = await setMetadata(tmp, o.metadata);
    const unexpect = expectUploadRename(target, (await stat(tmp)).ino);
    await rename(tmp, target).catch((e: unknown) => {
      unexpect();
      throw e;
    });
  } catch (e) {
    body.resume();
    await rm(tmp, { force: true });
    throw e;
  }
  uploadDone(target, existing !== undefined);
  return { name: basename(path), path, type: 'file', ...(kept ? { metadata: o.metadata } : {}) };
}

/**
 * Refuses an upload larger than the free space before a byte is read (answering 507, then
 * closing the connection lingering, `lingeringClose`): draining a 1 GB body only to answer 507
 * would take minutes under emulation. `upload-refusal.test.ts`.
 */
async function refusedForSpace(
  req: IncomingMessage,
  res: ServerResponse,
  qpath: string | null,
  d: FilesDeps,
): Promise<boolean> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (!Number.isFinite(declared) || declared <= 0) return false;
  const where = qpath ? dirname(resolve(qpath, d)) : d.user.home;
  const fs = await statfsNearest(where);
  const free = fs ? fs.bfree * fs.bsize : Infinity;
  if (declared <= free) return false;
  // No `Connection: close`: with it Node's server destroys the socket as soon as the answer is
  // written, the body still arriving, which resets the connection and defeats the linger.
  sendError(res, 507, `not enough disk space: the upload is ${declared} bytes, ${free} are free`);
  res.on('finish', () => {
    lingeringClose(req);
  });
  return true;
}

/** How long a refused upload's connection keeps reading (and dropping) its body (ms). */
const LINGER_MS = 2000;

/**
 * Closes the connection of a request whose answer is sent but whose body was not read: half
 * close (FIN), then read and drop what still comes for LINGER_MS before the socket goes. A close
 * with unread data resets the connection, and a reset can make the peer (the envd proxy, still
 * sending the body) drop the answer it had not read yet, so the client got a 502, not the 507.
 */
function lingeringClose(req: IncomingMessage): void {
  req.resume();
  req.socket.end();
  setTimeout(() => req.socket.destroy(), LINGER_MS).unref();
}

interface PartsOpts {
  qpath: string | null;
  gzip: boolean;
  metadata: Metadata;
  onPath: (path: string) => void;
}

/**
 * Writes each `file` part of a multipart body (to `qpath`, else to its filename, which keeps its
 * directories and resolves like any path: relative ones against the user's home). A part without
 * a filename (a plain form field, as `curl -F 'file=<x'` sends) is accepted like envd does, when
 * `qpath` names the destination. The answer lists the files in the body's order. `onPath` hears
 * each destination (for error messages). The first failure is thrown once the body has been read.
 */
async function writeParts(req: IncomingMessage, o: PartsOpts, d: FilesDeps): Promise<Written[]> {
  const results: (Written | undefined)[] = [];
  const seen = new Set<string>();
  const pending: Promise<void>[] = [];
  let failure: Error | undefined;
  const fail = (e: Error): void => {
    failure ??= e;
  };
  /** The destination of a part, or undefined (then the part is skipped, `failure` says why). */
  const destination = (filename: string | undefined): string | undefined => {
    const dest = o.qpath ?? filename;
    let why: string | undefined;
    let path: string | undefined;
    try {
      path = dest ? resolve(dest, d) : undefined;
    } catch (e) {
      fail(e as Error);
      return undefined;
    }
    if (!path) why = 'a file part has no filename and no path query parameter was given';
    else if (seen.has(path)) why = `path '${path}' is written twice in one request`;
    if (path) o.onPath(path);
    if (why) {
      fail(new HttpError(400, why));
      return undefined;
    }
    if (path) seen.add(path);
    return path;
  };
  const write = (path: string, body: Readable): void => {
    const slot = results.push(undefined) - 1;
    pending.push(
      writeOne(path, body, o, d).then(
        (w) => {
          results[slot] = w;
        },
        (e: unknown) => {
          fail(statusOf(e, path));
        },
      ),
    );
  };
  await new Promise<void>((done, failParse) => {
    // latin1 keeps a field's bytes as they were sent; preservePath keeps a filename's directories.
    const bb = busboy({
      headers: req.headers,
      preservePath: true,
      defCharset: 'latin1',
      limits: { fieldSize: FIELD_PART_MAX },
    });
    bb.on('file', (field, stream, info) => {
      const path = field === 'file' && !failure ? destination(info.filename) : undefined;
      if (path) write(path, stream);
      else stream.resume();
    });
    bb.on('field', (field, value, info) => {
      if (field !== 'file' || failure) return;
      if (info.valueTruncated) {
        fail(
          new HttpError(
            413,
            `a file part without a filename may hold at most ${FIELD_PART_MAX} bytes: give it a filename`,
          ),
        );
        return;
      }
      const path = destination(undefined);
      if (path) write(path, Readable.from([Buffer.from(value, 'latin1')]));
    });
    bb.on('error', failParse);
    bb.on('close', done);
    req.pipe(bb);
  });
  await Promise.all(pending);
  if (failure) throw failure;
  const written = results.filter((w): w is Written => w !== undefined);
  if (written.length === 0) throw new HttpError(400, 'no "file" part in the multipart body');
  return written;
}

/** POST /files: multipart (field `file`, filename = destination when no `path`) or octet-stream. */
export async function postFiles(
  req: IncomingMessage,
  res: ServerResponse,
  query: URLSearchParams,
  d: FilesDeps,
): Promise<void> {
  const ctype = (req.headers['content-type'] ?? '').toLowerCase();
  const gzip = (req.headers['content-encoding'] ?? '').toLowerCase() === 'gzip';
  const qpath = query.get('path');
  let shown = qpath ?? '';
  if (await refusedForSpace(req, res, qpath, d)) return;
  try {
    let metadata: Metadata;
    try {
      metadata = metadataFromHeaders(req.headersDistinct);
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    if (ctype.startsWith('application/octet-stream')) {
      if (!qpath)
        throw new HttpError(400, 'the path query parameter is required for application/octet-stream uploads');
      const path = resolve(qpath, d);
      shown = path;
      sendJson(res, 200, [await writeOne(path, req, { gzip, metadata }, d)]);
      return;
    }
    if (!ctype.startsWith('multipart/form-data')) {
      throw new HttpError(
        400,
        `unsupported content type '${ctype || '(none)'}': use multipart/form-data or application/octet-stream`,
      );
    }
    const onPath = (p: string): void => {
      shown = p;
    };
    sendJson(res, 200, await writeParts(req, { qpath, gzip, metadata, onPath }, d));
  } catch (e) {
    const h = statusOf(e, shown);
    // Answer once the client has sent everything: an early answer would look like a reset.
    if (!req.readableEnded) {
      req.resume();
      await Promise.race([once(req, 'end'), once(req, 'close'), new Promise((r) => setTimeout(r, 120_000))]);
    }
    sendError(res, h.status, h.message);
  }
}
