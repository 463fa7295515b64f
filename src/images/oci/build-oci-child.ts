import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { KilnError, type ErrorCode } from '../../core/errors.ts';
import type { OciBuildOpts, OciBuildProgress, OciBuildResult } from './build-oci.ts';

const MAIN = fileURLToPath(new URL('./build-oci-main.ts', import.meta.url));

/**
 * `buildImageFromOci` in a child process (build-oci-main.ts): what kilnd should call. The
 * options (credentials included) go over the child's stdin; progress comes back as it happens;
 * an abort sends SIGTERM (the build cleans up its work directory and fails `cancelled`). The
 * child's error comes back with its own code.
 */
export function buildImageFromOciInChild(opts: Omit<OciBuildOpts, 'log'>): Promise<OciBuildResult> {
  const { onProgress, signal, credentials, ...rest } = opts;
  // Plain strings: a credentials object that hides its password from JSON would arrive without it.
  const plain = {
    ...rest,
    ...(credentials
      ? { credentials: { username: credentials.username, password: credentials.password } }
      : {}),
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], { stdio: ['pipe', 'pipe', 'inherit'] });
    const onAbort = (): void => {
      child.kill('SIGTERM');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let result: OciBuildResult | undefined;
    let error: { code?: ErrorCode; message?: string } | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      let msg: { progress?: OciBuildProgress; result?: OciBuildResult; error?: typeof error };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        return; // not ours
      }
      if (msg.progress) onProgress?.(msg.progress);
      if (msg.result) result = msg.result;
      if (msg.error) error = msg.error;
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify(plain));
    child.on('error', (e) => {
      reject(new KilnError('image_build_failed', `cannot start the image build: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (code === 0 && result) {
        resolve(result);
        return;
      }
      const how = code === null ? `signal ${sig ?? '?'}` : `exit code ${code}`;
      reject(
        new KilnError(
          error?.code ?? 'image_build_failed',
          error?.message ?? `the image build ended with ${how}`,
        ),
      );
    });
  });
}
