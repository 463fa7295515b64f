import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('./main.ts', import.meta.url));

/** Runs the CLI with empty cache and state dirs, so any attempt to build or boot would show. */
function kiln(...args: string[]): ReturnType<typeof kilnWith> {
  return kilnWith({}, ...args);
}

function kilnWith(
  extraEnv: Record<string, string>,
  ...args: string[]
): {
  status: number | null;
  stderr: string;
  stdout: string;
  touched: string[];
} {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-'));
  try {
    const r = spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      env: {
        ...process.env,
        KILN_CACHE_DIR: join(home, 'cache'),
        KILN_STATE_DIR: join(home, 'state'),
        ...extraEnv,
      },
      timeout: 30_000,
    });
    return { status: r.status, stderr: r.stderr, stdout: r.stdout, touched: readdirSync(home) };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

test('bad input is refused with a clear error before anything is built or booted', () => {
  const cases: [string[], RegExp][] = [
    [['image', 'build', '--name', '../evil'], /invalid_argument: image name: "..\/evil" must not contain/],
    [['image', 'build', '--name', 'a/b'], /invalid_argument: image name/],
    [
      ['image', 'build', '--package', 'x;rm'],
      /invalid_argument: packages: "x;rm" is not a Debian package name/,
    ],
    [['run', '--template', '../../etc', '--', 'true'], /invalid_argument: template/],
    [['run', '--timeout', 'soon', '--', 'true'], /invalid_argument: timeout: must be an integer, got "soon"/],
    [['run', '--env', 'NOEQUALS', '--', 'true'], /invalid_argument: env: "NOEQUALS" must be KEY=VALUE/],
    [['run'], /kiln run needs a command after --/],
    [['template', 'build', '--name', 'Bad/Name'], /invalid_argument: template/],
  ];
  for (const [args, re] of cases) {
    const r = kiln(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.deepEqual(r.touched, [], `${args.join(' ')} created nothing`);
  }
});

test('unknown commands print usage and exit 2', () => {
  const r = kiln('frobnicate');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
  assert.match(r.stderr, /usage:/);
});

test('a bad KILN_* variable is refused at start, naming the variable, before anything runs', () => {
  const r = kilnWith({ KILN_ACCEL: 'fast' }, 'sandbox', 'list');
  assert.equal(r.status, 2, r.stderr);
  assert.match(
    r.stderr,
    /^kiln: invalid_argument: KILN_ACCEL: must be one of auto \| kvm \| tcg, got "fast"$/m,
  );
  assert.deepEqual(r.touched, [], 'no daemon was started');
});
