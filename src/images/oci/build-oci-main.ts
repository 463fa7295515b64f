/**
 * Builds an image from an OCI image in a process of its own (see build-oci-child.ts): umask 022
 * whatever the parent's, and the layer extraction's synchronous file operations block this
 * process's event loop, not kilnd's. Reads its options as one JSON object on stdin (credentials
 * travel there, never on the command line); writes JSON lines on stdout: `{"progress": …}`
 * while building, then `{"result": OciBuildResult}` or `{"error": {code, message}}`.
 */
import { asKilnError } from '../../core/errors.ts';
import { buildImageFromOci, type OciBuildOpts } from './build-oci.ts';

process.umask(0o022);
const say = (o: unknown): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};
const abort = new AbortController();
process.once('SIGTERM', () => {
  abort.abort();
});
try {
  let input = '';
  for await (const c of process.stdin) input += String(c);
  const opts = JSON.parse(input) as Omit<OciBuildOpts, 'onProgress' | 'signal' | 'log'>;
  const result = await buildImageFromOci({
    ...opts,
    signal: abort.signal,
    onProgress: (p) => {
      say({ progress: p });
    },
  });
  say({ result });
} catch (e) {
  say({ error: asKilnError(e, 'image_build_failed').toJSON() });
  process.exitCode = 1;
}
