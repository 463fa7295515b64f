// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The layering rule (docs/ARCHITECTURE.md): each layer may import only the layers below it.
 * api -> daemon -> (store, vmm, images) -> core; cli -> sdk; guest -> core.
 * `from` lists the folders a layer must NOT import.
 */
const layers = {
  core: ['store', 'vmm', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  store: ['vmm', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  vmm: ['store', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  images: ['store', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  daemon: ['api', 'sdk', 'cli', 'guest'],
  api: ['sdk', 'cli', 'guest'],
  sdk: ['store', 'vmm', 'images', 'daemon', 'api', 'cli', 'guest'],
  guest: ['store', 'vmm', 'images', 'daemon', 'api', 'sdk', 'cli'],
  // cli -> sdk; `kiln image build` runs the image build in-process (root, local cache), so
  // images/ is the one lower layer the cli may use.
  cli: ['store', 'vmm', 'daemon', 'api', 'guest'],
};
/** One override per layer: `no-restricted-imports` with the banned layers' folders. */
// Tests may cross layers to build fixtures (a daemon test runs the real guest agent in-process);
// the code under test may not.
const layerRules = Object.entries(layers).map(([layer, banned]) => ({
  files: [`src/${layer}/**/*.ts`],
  ignores: ['**/*.test.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: banned.map((b) => ({
          group: [`**/${b}/**`, `**/${b}/*`],
          message: `layering: src/${layer} must not import src/${b} (see docs/ARCHITECTURE.md)`,
        })),
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'src/core/envd/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'],
            },
          ],
        },
      ],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-console': 'error',
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'exit', message: 'only cli/ exits' },
      ],
    },
  },
  ...layerRules,
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    // The CLI and benchmarks talk to people; tests may print diagnostics.
    files: ['src/cli/**', 'bench/**'],
    rules: { 'no-console': 'off', 'no-restricted-properties': 'off' },
  },
);
