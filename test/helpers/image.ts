import { loadConfig } from '../../src/core/config.ts';
import { buildImage } from '../../src/images/build.ts';
import { imageByKey, type Image } from '../../src/images/registry.ts';
import { defaultImageSpec } from '../../src/images/spec.ts';

let cached: Promise<Image> | undefined;

/**
 * The default guest image, built by `buildImage` into the shared cache (~/.cache/kiln, or
 * $KILN_CACHE_DIR) on first use and reused afterwards: it is keyed by the content of its inputs,
 * and concurrent builds of one key (two test runs) are safe (see images/build.ts).
 */
export function ensureDefaultImage(): Promise<Image> {
  cached ??= (async () => {
    const cacheDir = loadConfig().cacheDir;
    const built = await buildImage({
      spec: defaultImageSpec(),
      cacheDir,
      onProgress: (p) => {
        if (p.phase !== 'detail')
          process.stderr.write(`# image [${p.index}/${p.total}] ${p.step}: ${p.message}\n`);
      },
    });
    // By the key this build made, not by the name `default`: a concurrent build from another
    // checkout (another key) may move the name at any time.
    return imageByKey(cacheDir, built.manifest.key);
  })();
  return cached;
}
