import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { authorize, parseChallenges, pullError, type RegistryCredentials } from './auth.ts';
import { MANIFEST_ACCEPT, type Descriptor } from './manifest.ts';
import { registryScheme, type ImageReference } from './reference.ts';

/** The largest manifest or config kiln reads into memory. */
export const MAX_DOC_BYTES = 4 * 2 ** 20;

export interface RegistryClientOpts {
  /** Registries (`host:port` as in references) that may be spoken to over plain HTTP. */
  insecure?: readonly string[] | undefined;
  credentials?: RegistryCredentials | undefined;
  signal?: AbortSignal | undefined;
}

/** Where a verified blob lives in the cache: `<cacheDir>/oci/blobs/sha256/<hex>`. */
export const blobPath = (cacheDir: string, digest: string): string =>
  join(cacheDir, 'oci', 'blobs', 'sha256', digest.slice('sha256:'.length));

/**
 * A client of one repository on a registry (distribution API v2). It answers a 401 once per
 * request with the challenge's credentials (bearer token or basic) and keeps them for the next
 * requests. Everything it returns is checked against a sha256 digest.
 */
export class RegistryClient {
  readonly origin: string;
  readonly #ref: ImageReference;
  readonly #o: RegistryClientOpts;
  #authorization: string | undefined;

  constructor(ref: ImageReference, o: RegistryClientOpts = {}) {
    this.#ref = ref;
    this.#o = o;
    this.origin = `${registryScheme(ref.registry, ref.host, o.insecure)}://${ref.registry}`;
  }

  async #get(path: string, accept?: string): Promise<Response> {
    const url = `${this.origin}/v2/${this.#ref.repository}/${path}`;
    const send = (): Promise<Response> => {
      const headers: Record<string, string> = {};
      if (accept) headers.accept = accept;
      if (this.#authorization) headers.authorization = this.#authorization;
      return fetch(url, { headers, signal: this.#o.signal ?? null }).catch((e: unknown) => {
        if (this.#o.signal?.aborted) throw e;
        throw pullError(`cannot reach ${this.origin}: ${(e as Error).message}`, e);
      });
    };
    let res = await send();
    if (res.status === 401) {
      await res.body?.cancel();
      this.#authorization = await authorize(parseChallenges(res.headers.get('www-authenticate') ?? ''), {
        registryOrigin: this.origin,
        scope: `repository:${this.#ref.repository}:pull`,
        credentials: this.#o.credentials,
        signal: this.#o.signal,
      });
      res = await send();
    }
    if (!res.ok) {
      await res.body?.cancel();
      const what =
        res.status === 404
          ? 'not found'
          : res.status === 401
            ? this.#o.credentials
              ? 'unauthorized: the registry refused the credentials'
              : 'unauthorized: the registry wants credentials'
            : res.status === 403
              ? 'access denied'
              : 'error';
      throw pullError(`${url} answered ${res.status} (${what})`);
    }
    return res;
  }

  /** Fetches a manifest by tag or digest; a digest reference must match the body's sha256. */
  async manifest(
    reference: string,
  ): Promise<{ body: string; digest: string; mediaType: string | undefined }> {
    const res = await this.#get(`manifests/${reference}`, MANIFEST_ACCEPT);
    const bytes = await readLimited(res, MAX_DOC_BYTES, 'the manifest');
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference)
      throw pullError(`the manifest ${reference} arrived with the digest ${digest} (tampered or corrupt)`);
    return { body: bytes.toString('utf8'), digest, mediaType: res.headers.get('content-type') ?? undefined };
  }

  /**
   * Puts a blob into the cache (unless it is there) and returns its path. It streams to a
   * private file, hashing and counting; only a blob of exactly the descriptor's size and digest
   * is renamed into place, so the cache holds verified blobs only.
   */
  async blob(d: Descriptor, cacheDir: string, onBytes?: (n: number) => void): Promise<string> {
    const path = blobPath(cacheDir, d.digest);
    const have = await stat(path).catch(() => undefined);
    if (have?.size === d.size) return path;
    const dir = join(path, '..');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const res = await this.#get(`blobs/${d.digest}`);
      if (!res.body) throw pullError(`the blob ${d.digest} came without a body`);
      const h = createHash('sha256');
      let n = 0;
      const check = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          n += chunk.length;
          if (n > d.size) {
            cb(pullError(`the blob ${d.digest} is larger than its ${d.size} bytes`));
            return;
          }
          h.update(chunk);
          onBytes?.(chunk.length);
          cb(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(res.body), check, createWriteStream(tmp, { mode: 0o644 }), {
        signal: this.#o.signal,
      });
      const got = `sha256:${h.digest('hex')}`;
      if (n !== d.size) throw pullError(`the blob ${d.digest} ended after ${n} of ${d.size} bytes`);
      if (got !== d.digest)
        throw pullError(`the blob ${d.digest} arrived with the digest ${got} (tampered or corrupt)`);
      await rename(tmp, path);
      return path;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** A small blob (the config) read and verified in memory. */
  async smallBlob(d: Descriptor): Promise<string> {
    if (d.size > MAX_DOC_BYTES) throw pullError(`the config blob is too large (${d.size} bytes)`);
    const bytes = await readLimited(await this.#get(`blobs/${d.digest}`), MAX_DOC_BYTES, 'the config');
    const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (got !== d.digest)
      throw pullError(`the blob ${d.digest} arrived with the digest ${got} (tampered or corrupt)`);
    return bytes.toString('utf8');
  }
}

async function readLimited(res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  if (res.body) {
    for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += c.length;
      if (n > max) throw pullError(`${what} is larger than ${max} bytes`);
      chunks.push(Buffer.from(c));
    }
  }
  return Buffer.concat(chunks);
}
