import { createHash, randomBytes } from 'node:crypto';
import type { ApiKeyRecord } from '../core/domain.ts';
import { KilnError, isKilnError } from '../core/errors.ts';
import { newId } from '../core/ids.ts';
import { validateName } from '../core/validate.ts';
import type { Store } from '../store/store.ts';

/** How often a key's last use is written (a write per request would cost an fsync each). */
const TOUCH_EVERY_MS = 60_000;

export const hashApiKey = (key: string): string => createHash('sha256').update(key).digest('hex');

/**
 * The API keys kiln issues for its E2B-compatible API (`X-API-KEY`). A key is shown once, when
 * it is created; only its SHA-256 is stored. Keys look like E2B's (`e2b_` + 40 hex digits), so
 * tools that check the shape accept them.
 */
export class ApiKeyService {
  readonly #store: Store;
  readonly #now: () => number;

  constructor(deps: { store: Store; now?: () => number }) {
    this.#store = deps.store;
    this.#now = deps.now ?? Date.now;
  }

  /**
   * Issues a key; the returned `key` is the only copy of it. An admin key sees and acts on every
   * sandbox, snapshot and template; another key only on those it created.
   */
  create(name: string, opts: { admin?: boolean } = {}): { record: ApiKeyRecord; key: string } {
    validateName('name', name);
    const key = 'e2b_' + randomBytes(20).toString('hex');
    const record: ApiKeyRecord = {
      id: newId('key'),
      name,
      keyHash: hashApiKey(key),
      prefix: key.slice(0, 10),
      createdAt: new Date(this.#now()).toISOString(),
      lastUsedAt: null,
      admin: opts.admin ?? false,
    };
    this.#store.insertApiKey(record);
    return { record, key };
  }

  /** The key's record; `unauthenticated` when the key is missing or unknown (or revoked). */
  verify(key: string | undefined): ApiKeyRecord {
    if (!key)
      throw new KilnError('unauthenticated', 'missing API key: set the X-API-KEY header (E2B_API_KEY)');
    let rec: ApiKeyRecord;
    try {
      rec = this.#store.getApiKeyByHash(hashApiKey(key));
    } catch (e) {
      if (isKilnError(e) && e.code === 'not_found')
        throw new KilnError('unauthenticated', 'invalid API key: create one with `kiln api-key create`');
      throw e;
    }
    const now = this.#now();
    if (rec.lastUsedAt === null || now - Date.parse(rec.lastUsedAt) > TOUCH_EVERY_MS) {
      const at = new Date(now).toISOString();
      this.#store.touchApiKey(rec.id, at);
      rec = { ...rec, lastUsedAt: at };
    }
    return rec;
  }

  list(): ApiKeyRecord[] {
    return this.#store.listApiKeys();
  }

  delete(id: string): void {
    validateName('id', id);
    this.#store.deleteApiKey(id);
  }
}
