import { loadConfig } from '../../src/core/config.ts';
import { buildImage } from '../../src/images/build.ts';
import { resolveImage, type Image } from '../../src/images/registry.ts';
import { defaultImageSpec } from '../../src/images/spec.ts';

let cached: Promise<Image> | undefined;

/**
 * The default guest image, built by `buildImage` into the shared cache (~/.cache/kiln, or
 * $KILN_CACHE_DIR) on first use and reused afterwards: it is keyed by the content of its inputs.
 */
export function ensureDefaultImage(): Promise<Image> {
  cached ??= (async () => {
    const cacheDir = loadConfig().cacheDir;
    await buildImage({
      spec: defaultImageSpec(),
      cacheDir,
      onProgress: (p) => {
        if (p.phase !== 'detail')
          process.stderr.write(`# image [${p.index}/${p.total}] ${p.step}: ${p.message}\n`);
      },
    });
    return resolveImage(cacheDir, 'default');
  })();
  return cached;
}
