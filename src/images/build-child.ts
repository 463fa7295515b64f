import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KilnError, type ErrorCode } from '../core/errors.ts';

const BUILD_MAIN = fileURLToPath(new URL('./build-main.ts', import.meta.url));

/**
 * Builds (or finds in the cache) the default image in a child process and resolves with its key with umask 022 (see
 * build-main.ts), whatever the caller's umask. The .deb cache and the mirror (the config's
 * KILN_DEB_CACHE_DIR / KILN_DEBIAN_MIRROR) go to it as arguments. Its log lines go to this process's stderr; its
 * error comes back with its own code.
 */
export function buildDefaultImageInChild(
  cacheDir: string,
  o: { debCacheDir?: string | undefined; mirror?: string | undefined } = {},
): Promise<string> {
  const args = [BUILD_MAIN, cacheDir];
  if (o.debCacheDir !== undefined) args.push('--deb-cache-dir', o.debCacheDir);
  if (o.mirror !== undefined) args.push('--mirror', o.mirror);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', (e) => {
      reject(new KilnError('image_build_failed', `cannot start the image build: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code === 0) {
        try {
          resolve(String((JSON.parse(last) as { key: unknown }).key));
        } catch {
          reject(
            new KilnError('image_build_failed', `the image build said no image key: ${last.slice(0, 200)}`),
          );
        }
        return;
      }
      let err: { code?: ErrorCode; message?: string } | undefined;
      try {
        err = (JSON.parse(last) as { error?: typeof err }).error;
      } catch {
        // no answer: it died
      }
      reject(
        new KilnError(
          err?.code ?? 'image_build_failed',
          err?.message ??
            `the image build ended with ${code === null ? `signal ${sig ?? '?'}` : `exit code ${code}`}`,
        ),
      );
    });
  });
}
