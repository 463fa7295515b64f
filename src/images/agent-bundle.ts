import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

/** The guest runs the same Node as the host (copied into the image by the build). */
export const GUEST_NODE_TARGET = 'node24';

/** Bundles the guest agent (src/guest/main.ts and what it imports) into one ES module. */
export async function bundleAgent(): Promise<string> {
  const entry = fileURLToPath(new URL('../guest/main.ts', import.meta.url));
  const out = await build({
    entryPoints: [entry],
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
