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

const noExit = { object: 'process', property: 'exit', message: 'only cli/ exits' };
/** Every KILN_* variable is read once by core/config.ts's loadConfig in a process entry. */
const ENV_READERS = [
  'src/core/config.ts',
  'src/api/main.ts',
  'src/cli/main.ts',
  'src/images/build-main.ts',
  'src/guest/main.ts',
];
const noEnv = {
  object: 'process',
  property: 'env',
  message: 'read configuration in core/config.ts (loadConfig, called by a process entry) and pass it down',
};

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
      'no-restricted-properties': ['error', noExit, noEnv],
    },
  },
  ...layerRules,
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    // The CLI and benchmarks talk to people; tests may print diagnostics.
    files: ['src/cli/**', 'bench/**'],
    rules: { 'no-console': 'off', 'no-restricted-properties': ['error', noEnv] },
  },
  {
    // The environment is read by the config module, the process entries, tests and benches.
    files: [...ENV_READERS, '**/*.test.ts', 'test/**', 'bench/**', 'scripts/**'],
    rules: { 'no-restricted-properties': ['error', noExit] },
  },
  { files: ['src/cli/main.ts', 'bench/**'], rules: { 'no-restricted-properties': 'off' } },
);
