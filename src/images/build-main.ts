/**
 * Builds the default guest image in a process of its own: `node src/images/build-main.ts
 * <cacheDir> [--deb-cache-dir DIR] [--mirror URL]` (kilnd passes its config's values). kilnd runs with umask 077 (its state holds secrets), which the tools that build
 * the guest's filesystem would inherit (debootstrap, dpkg's scripts, files written here): the
 * guest's /etc/resolv.conf or /opt/kiln would end up unreadable to its user. This process uses
 * the usual 022. Logs go to stderr as JSON lines; success ends with `{"key": <image key>}` and a
 * failure with `{"error": {code, message}}` on stdout.
 */
import { parseArgs } from 'node:util';
import { asKilnError } from '../core/errors.ts';
import { createLogger } from '../core/log.ts';
import { buildImage } from './build.ts';
import { defaultImageSpec } from './spec.ts';

process.umask(0o022);
const log = createLogger({ bindings: { component: 'image-build' } });
try {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { 'deb-cache-dir': { type: 'string' }, mirror: { type: 'string' } },
  });
  const cacheDir = positionals[0];
  if (!cacheDir) throw new Error('usage: build-main.ts <cacheDir> [--deb-cache-dir DIR] [--mirror URL]');
  const built = await buildImage({
    spec: defaultImageSpec(),
    cacheDir,
    debCacheDir: values['deb-cache-dir'],
    mirror: values.mirror,
    log,
  });
  // The caller boots this image by its key: the name `default` may move under it (another build).
  process.stdout.write(JSON.stringify({ key: built.manifest.key }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: asKilnError(e).toJSON() }) + '\n');
  process.exitCode = 1;
}
