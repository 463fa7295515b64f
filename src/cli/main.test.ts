import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('./main.ts', import.meta.url));

/** Runs the CLI with empty cache and state dirs, so any attempt to build or boot would show. */
function kiln(...args: string[]): {
  status: number | null;
  stderr: string;
  stdout: string;
  touched: string[];
} {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-'));
  try {
    const r = spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      env: { ...process.env, KILN_CACHE_DIR: join(home, 'cache'), KILN_STATE_DIR: join(home, 'state') },
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
    [['run', '--memory=-5'], /invalid_argument: memoryMiB: must be between 128 and 65536, got -5/],
    [['run', '--memory', '99999999'], /invalid_argument: memoryMiB/],
    [['run', '--vcpus', '0'], /invalid_argument: vcpus: must be between 1 and 32, got 0/],
    [['run', '--vcpus', 'many'], /invalid_argument: vcpus: must be an integer/],
    [['run', '--image', '../../etc'], /invalid_argument: image/],
  ];
  for (const [args, re] of cases) {
    const r = kiln(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.deepEqual(r.touched, [], `${args.join(' ')} created nothing`);
  }
});

test('a named image that was never built is not_found with the command to build it', () => {
  const r = kiln('run', '--image', 'nope');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not_found: image "nope" is not built; run: kiln image build --name nope/);
});

test('unknown commands print usage and exit 2', () => {
  const r = kiln('frobnicate');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
  assert.match(r.stderr, /usage:/);
});
