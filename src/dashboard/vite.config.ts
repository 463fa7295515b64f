/**
 * The dashboard's front-end build (Vite, Preact's JSX through Vite's own transform). The set-up
 * (scripts/env.sh `kiln_dashboard_build`) runs it with `--outDir`; kilnd serves the result.
 * Everything is bundled: the page loads nothing from anywhere but kilnd.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('./web', import.meta.url)),
  base: '/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    target: 'es2022',
    assetsDir: 'assets',
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
});
