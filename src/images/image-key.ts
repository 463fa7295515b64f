import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { ImageSpec } from './spec.ts';

/** Bump when the build recipe changes in a way the inputs below do not capture. */
export const BUILDER_VERSION = 1;

/**
 * The modules whose code decides what goes into an image. Their contents (never their paths) are
 * a key input, so a change to the recipe rebuilds while a checkout elsewhere reuses the cache.
 */
const RECIPE_FILES = ['build.ts', 'kernel.ts', 'initramfs.ts', 'rootfs.ts'];

export const sha256 = (s: string | Uint8Array): string => createHash('sha256').update(s).digest('hex');

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Everything an image is made of, by content. */
export interface ImageInputs {
  spec: ImageSpec;
  kernel: { pkg: string; version: string };
  /** The bundled guest agent (agent-bundle.ts: free of checkout paths). */
  agent: string;
  initramfsInit: string;
  kilnInit: string;
  /** The Node runtime copied into the guest, and its version. */
  node: { version: string; sha256: string };
  /** SHA-256 of the recipe modules (`recipeDigest()`). */
  recipe: string;
}

/** SHA-256 over the contents of the recipe modules, in a fixed order. */
export async function recipeDigest(): Promise<string> {
  const h = createHash('sha256');
  for (const f of RECIPE_FILES) {
    h.update(`${f}\0`);
    h.update(await readFile(fileURLToPath(new URL(`./${f}`, import.meta.url))));
  }
  return h.digest('hex');
}

/** The cache key of an image: a content hash of its inputs, the same wherever kiln is checked out. */
export function imageKey(i: ImageInputs): string {
  return sha256(
    JSON.stringify({
      builder: BUILDER_VERSION,
      recipe: i.recipe,
      suite: i.spec.suite,
      packages: [...i.spec.packages].sort(),
      kernel: `${i.kernel.pkg}=${i.kernel.version}`,
      modules: i.spec.modules,
      rootfsSizeMiB: i.spec.rootfsSizeMiB,
      files: { initramfsInit: sha256(i.initramfsInit), kilnInit: sha256(i.kilnInit), agent: sha256(i.agent) },
      node: i.node,
    }),
  ).slice(0, 32);
}
