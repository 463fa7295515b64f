import { build } from 'esbuild';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The guest runs the same Node as the host (copied into the image by the build). */
export const GUEST_NODE_TARGET = 'node24';

/** The checkout this module belongs to (src/images/../..). */
const CHECKOUT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Bundles the guest agent (src/guest/main.ts and what it imports) into one ES module.
 *
 * The bundle is an image-key input, so it must depend on content only. esbuild names every
 * module in the output (`// node_modules/busboy/lib/utils.js` comments and the keys of bundled
 * CommonJS modules) by its path relative to the working directory, after resolving symlinks.
 * So the working directory is the checkout itself, not the process's, and symlinks are kept as
 * written: a worktree whose node_modules links elsewhere names `node_modules/...` like a clone.
 * `checkout` is for the test that bundles copies at two places.
 */
export async function bundleAgent(checkout = CHECKOUT): Promise<string> {
  const out = await build({
    entryPoints: [join(checkout, 'src/guest/main.ts')],
    absWorkingDir: checkout,
    preserveSymlinks: true,
    bundle: true,
    platform: 'node',
    target: GUEST_NODE_TARGET,
    format: 'esm',
    write: false,
    legalComments: 'none',
    logLevel: 'silent',
    // CommonJS dependencies (busboy) call require() for Node built-ins; give the ES module one.
    banner: {
      js: "// kiln guest agent (bundled; do not edit)\nimport { createRequire as __kilnCreateRequire } from 'node:module';\nconst require = __kilnCreateRequire(import.meta.url);",
    },
  });
  const file = out.outputFiles[0];
  if (!file) throw new Error('esbuild produced no output for the guest agent');
  return file.text;
}
