/** What `kiln e2b env` prints (POST /v1/e2b/env): the E2B API's URLs and a kept admin key. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { E2bEnvView } from '../core/api-types.ts';
import { isKilnError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import type { ApiKeyService } from '../daemon/api-keys.ts';

type E2bEnv = E2bEnvView;

/**
 * What `kiln e2b env` prints: the two URLs and an API key. The key is created on first use and
 * kept (mode 0600) in `<state>/e2b-env.key`, so every call prints the same one until it is revoked.
 */
async function envForCli(
  stateDir: string,
  keys: ApiKeyService,
  apiUrl: string,
  sandboxUrl: string,
): Promise<E2bEnv> {
  const file = join(stateDir, 'e2b-env.key');
  const kept = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (kept) {
    try {
      keys.verify(kept);
      return { apiUrl, sandboxUrl, apiKey: kept };
    } catch (e) {
      if (!isKilnError(e) || e.code !== 'unauthenticated') throw e;
    }
  }
  // The local user's key: an admin key, it sees every sandbox (as `kiln` on the socket does).
  const { key } = keys.create('e2b-env', { admin: true });
  await writeFileAtomic(file, key + '\n', 0o600);
  return { apiUrl, sandboxUrl, apiKey: key };
}

/** `envForCli`, one call at a time: concurrent first calls would each create a key and race to keep theirs. */
export function e2bEnvOnce(
  stateDir: string,
  keys: ApiKeyService,
  apiUrl: string,
  sandboxUrl: string,
): () => Promise<E2bEnv> {
  let inFlight: Promise<E2bEnv> | undefined;
  return () =>
    (inFlight ??= envForCli(stateDir, keys, apiUrl, sandboxUrl).finally(() => {
      inFlight = undefined;
    }));
}
