/**
 * The build contexts the SDK uploads for `copy` steps: one tar (gzip or not) per files hash,
 * stored content-addressed under `<data>/template-files/`, written atomically (tmp + rename), so
 * a half upload is never taken for a present one. Upload links carry a one-time token: the PUT
 * comes from the SDK's plain fetch, without the API key.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KilnError } from '../../core/errors.ts';
import { validateFilesHash } from '../../core/template-steps.ts';

/** How long an upload link stays good. */
const LINK_TTL_MS = 3_600_000;

const fileName = (hash: string): string => Buffer.from(validateFilesHash(hash)).toString('hex') + '.tar';

export class BuildFiles {
  readonly #dir: string;
  readonly #now: () => number;
  readonly #links = new Map<string, { hash: string; expires: number }>();

  constructor(dataDir: string, now: () => number) {
    this.#dir = join(dataDir, 'template-files');
    this.#now = now;
  }

  /** Where the upload of `hash` is kept. */
  path(hash: string): string {
    return join(this.#dir, fileName(hash));
  }

  async present(hash: string): Promise<boolean> {
    try {
      return (await stat(this.path(hash))).isFile();
    } catch {
      return false;
    }
  }

  /** A one-time token for uploading `hash`. */
  link(hash: string): string {
    validateFilesHash(hash);
    const now = this.#now();
    for (const [k, v] of this.#links) if (v.expires < now) this.#links.delete(k);
    const token = randomBytes(24).toString('hex');
    this.#links.set(token, { hash, expires: now + LINK_TTL_MS });
    return token;
  }

  /** Stores the body of an upload made with `token`. */
  async receive(token: string, body: Readable): Promise<void> {
    const l = this.#links.get(token);
    if (!l || l.expires < this.#now())
      throw new KilnError('not_found', 'this upload link is unknown or expired; ask for a new one');
    this.#links.delete(token);
    await this.store(l.hash, body);
  }

  /** Stores `body` as the upload of `hash` (the native API: its socket is the owner's own). */
  async store(hash: string, body: Readable): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const final = this.path(hash);
    const tmp = `${final}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await pipeline(body, createWriteStream(tmp, { mode: 0o600 }));
      await rename(tmp, final);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
}
