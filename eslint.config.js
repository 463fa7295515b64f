// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The layering rule (docs/ARCHITECTURE.md): each layer may import only the layers below it.
 * api -> daemon -> (store, vmm, images) -> core; cli -> sdk; guest -> core.
 * `from` lists the folders a layer must NOT import.
 */
const layers = {
  core: ['store', 'vmm', 'net', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  store: ['vmm', 'net', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  vmm: ['store', 'net', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  // Sandbox networks (namespaces, nftables): picked by the composition root like the driver.
  net: ['store', 'vmm', 'images', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  images: ['store', 'net', 'daemon', 'api', 'sdk', 'cli', 'guest'],
  daemon: ['net', 'api', 'sdk', 'cli', 'guest'],
  api: ['sdk', 'cli', 'guest'],
  sdk: ['store', 'vmm', 'net', 'images', 'daemon', 'api', 'cli', 'guest'],
  guest: ['store', 'vmm', 'net', 'images', 'daemon', 'api', 'sdk', 'cli'],
  // cli -> sdk; `kiln image build` runs the image build in-process (root, local cache), so
  // images/ is the one lower layer the cli may use.
  cli: ['store', 'vmm', 'net', 'daemon', 'api', 'guest'],
};
/**
 * The QEMU driver is an implementation detail of src/vmm/qemu: the rest of the code speaks to
 * the VMM-neutral seam (src/vmm/driver.ts). Only the composition root picks the driver.
 */
const QEMU_ROOTS = ['src/api/kilnd.ts'];
const qemuBan = {
  group: ['**/vmm/qemu/**', '**/vmm/qemu/*', './qemu/*', './qemu/**'],
  message:
    'only src/vmm/qemu and the composition root (src/api/kilnd.ts) import the QEMU driver; use the neutral seam in src/vmm/driver.ts',
};
/**
 * One override per layer: `no-restricted-imports` with the banned layers' folders and the QEMU
 * ban. (A second override with the same rule on the same files would replace these options in a
 * flat config, so the QEMU ban is merged in here; the composition root gets the layer ban only.)
 */
// Tests may cross layers to build fixtures (a daemon test runs the real guest agent in-process);
// the code under test may not.
const layerRules = Object.entries(layers).flatMap(([layer, banned]) => {
  const patterns = banned.map((b) => ({
    group: [`**/${b}/**`, `**/${b}/*`],
    message: `layering: src/${layer} must not import src/${b} (see docs/ARCHITECTURE.md)`,
  }));
  const rules = (p) => ({ 'no-restricted-imports': ['error', { patterns: p }] });
  const roots = QEMU_ROOTS.filter((f) => f.startsWith(`src/${layer}/`));
  return [
    {
      files: [`src/${layer}/**/*.ts`],
      ignores: ['**/*.test.ts', ...roots],
      rules: rules([...patterns, qemuBan]),
    },
    ...(roots.length ? [{ files: roots, rules: rules(patterns) }] : []),
  ];
});

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
  {
    // The dashboard's browser code is its own program: it imports only its libraries and the
    // JSON shapes it shares with kilnd (core/dashboard-types.ts, types only).
    files: ['src/dashboard/**/*.{ts,tsx}'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/store/**',
                '**/vmm/**',
                '**/net/**',
                '**/images/**',
                '**/daemon/**',
                '**/api/**',
                '**/sdk/**',
                '**/cli/**',
                '**/guest/**',
              ],
              message: 'the dashboard front end talks to kilnd over HTTP only',
            },
          ],
        },
      ],
    },
  },
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
  // Size (issue 11): no source file over 500 lines; no function over 80 lines outside tests,
  // test helpers and contract suites (a test's body is a list of cases, not a function to read).
  { files: ['**/*.ts', '**/*.tsx'], rules: { 'max-lines': ['error', 500] } },
  {
    // Not .tsx: a component's body is mostly its markup, read as a document, not as logic.
    files: ['**/*.ts'],
    ignores: ['**/*.test.ts', '**/*.contract.ts', 'test/**'],
    rules: {
      'max-lines-per-function': ['error', { max: 80, skipBlankLines: true, skipComments: true }],
    },
  },
);
