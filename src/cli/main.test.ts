import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCli, type CliRun } from '../../test/helpers/cli.ts';

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
    // Sizes: one parser (core/size.ts), errors naming the flag and what to write.
    [['template', 'build', '--memory', '1X'], /invalid_argument: memory: "1X" has an unknown unit "X"/],
    [['template', 'build', '--memory', 'lots'], /invalid_argument: memory: "lots" is not a size: write/],
    [
      ['template', 'build', '--memory', '64M'],
      /invalid_argument: memory: "64M" is 64M: it must be from 128M to 64G/,
    ],
    [
      ['template', 'build', '--memory', '1.5M'],
      /invalid_argument: memory: "1.5M" is not a whole number of MiB/,
    ],
    [
      ['template', 'build', '-f', 'Dockerfile', '--memory', '2Q'],
      /invalid_argument: memory: "2Q" has an unknown unit "Q"/,
    ],
    [
      ['image', 'build', '--disk', '100M'],
      /invalid_argument: disk: "100M" is 100M: it must be from 512M to 256G/,
    ],
    [['image', 'build', '--disk', '1P'], /invalid_argument: disk: "1P" has an unknown unit "P"/],
    [['image', 'build', '--disk', '0G'], /invalid_argument: disk: "0G" is zero/],
    [['image', 'build', '--from-image', '127.0.0.1:5000/a:b', '--disk', '4G'], /--disk is for Debian images/],
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

const SANDBOX = {
  sandboxId: 'sbx-live',
  templateId: 'tpl-base',
  state: 'running',
  memoryMiB: 512,
  vcpus: 1,
  metadata: {},
  createdAt: '2026-01-01T00:00:00.000Z',
  startedAt: '2026-01-01T00:00:01.000Z',
  endAt: '2026-01-01T00:05:00.000Z',
  endReason: null,
  condition: null,
  envdAccessToken: 'SECRET-envd-token',
  ownerKeyId: null,
};

/**
 * A stand-in for kilnd on the state dir's socket (no VM, no real daemon): records the request
 * paths, answers from `routes`. The CLI runs asynchronously so this process can serve it.
 */
async function withFakeDaemon(
  routes: (path: string) => { status?: number; body: string } | undefined,
  f: (cli: (...args: string[]) => Promise<CliRun>, seen: string[]) => Promise<void>,
): Promise<void> {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-'));
  const state = join(home, 'state');
  mkdirSync(state, { mode: 0o700 });
  const seen: string[] = [];
  const server = createServer((req, res) => {
    const path = req.url ?? '';
    seen.push(`${req.method ?? ''} ${path}`);
    req.resume();
    const r = path === '/v1/health' ? { body: JSON.stringify({ ok: true, version: 'fake' }) } : routes(path);
    res.writeHead(r?.status ?? (r ? 200 : 404), { 'content-type': 'application/json' });
    res.end(r?.body ?? JSON.stringify({ code: 'not_found', message: `no route ${path}` }));
  });
  await new Promise<void>((r) => server.listen(join(state, 'kilnd.sock'), r));
  const cli = (...args: string[]): Promise<CliRun> => runCli(home, args, state);
  try {
    await f(cli, seen);
  } finally {
    await new Promise((r) => server.close(r));
    rmSync(home, { recursive: true, force: true });
  }
}

test('sandbox list asks for live sandboxes unless --all, and never prints a token', async () => {
  await withFakeDaemon(
    (path) =>
      path.startsWith('/v1/sandboxes?') || path === '/v1/sandboxes'
        ? { body: JSON.stringify({ items: [SANDBOX], next: null }) }
        : undefined,
    async (cli, seen) => {
      const json = await cli('sandbox', 'list', '--json');
      assert.equal(json.status, 0, json.stderr);
      assert.doesNotMatch(json.stdout, /SECRET|envdAccessToken/);
      const shown: Partial<typeof SANDBOX> = { ...SANDBOX };
      delete shown.envdAccessToken;
      assert.deepEqual(JSON.parse(json.stdout), [shown]);
      const tableOut = await cli('sandbox', 'list');
      assert.equal(tableOut.status, 0, tableOut.stderr);
      assert.match(tableOut.stdout, /^ID\s+TEMPLATE\s+STATE.*\nsbx-live\s+tpl-base\s+running/);
      assert.doesNotMatch(tableOut.stdout, /SECRET/);
      const all = await cli('sandbox', 'list', '--all', '--show-token', '--json');
      assert.doesNotMatch(all.stdout, /SECRET/, 'a list has no tokens, whatever the flags');
      await cli('sandbox', 'list', '--state', 'dead', '--json');
      const lists = seen.filter((s) => s.startsWith('GET /v1/sandboxes'));
      assert.deepEqual(lists, [
        `GET /v1/sandboxes?state=${encodeURIComponent('creating,running,pausing,paused,resuming,killing')}`,
        `GET /v1/sandboxes?state=${encodeURIComponent('creating,running,pausing,paused,resuming,killing')}`,
        'GET /v1/sandboxes',
        'GET /v1/sandboxes?state=dead',
      ]);
    },
  );
});

test('sandbox get shows the envd token only with --show-token', async () => {
  await withFakeDaemon(
    (path) => (path === '/v1/sandboxes/sbx-live' ? { body: JSON.stringify(SANDBOX) } : undefined),
    async (cli) => {
      const plain = await cli('sandbox', 'get', 'sbx-live', '--json');
      assert.equal(plain.status, 0, plain.stderr);
      assert.equal((JSON.parse(plain.stdout) as Record<string, unknown>)['envdAccessToken'], undefined);
      const tableOut = await cli('sandbox', 'get', 'sbx-live');
      assert.match(tableOut.stdout, /sandboxId\s+sbx-live/);
      assert.doesNotMatch(tableOut.stdout, /SECRET|envdAccessToken/);
      const shown = await cli('sandbox', 'get', 'sbx-live', '--show-token', '--json');
      assert.equal(
        (JSON.parse(shown.stdout) as Record<string, unknown>)['envdAccessToken'],
        'SECRET-envd-token',
      );
    },
  );
});

test('sandbox exec exits 128+N when signal N killed the command, else its own code', async () => {
  const ends: Record<string, { exitCode: number; status: string }> = {
    'sbx-killed': { exitCode: -1, status: 'signal: killed' },
    'sbx-termed': { exitCode: -1, status: 'signal: terminated' },
    'sbx-three': { exitCode: 3, status: 'exit status 3' },
  };
  await withFakeDaemon(
    (path) => {
      const id = /^\/v1\/sandboxes\/([^/]+)\/exec$/.exec(path)?.[1];
      const end = id === undefined ? undefined : ends[id];
      if (!end) return undefined;
      const out = Buffer.from('hi\n').toString('base64');
      return { body: `${JSON.stringify({ stdout: out })}\n${JSON.stringify({ exit: end })}\n` };
    },
    async (cli) => {
      const killed = await cli('sandbox', 'exec', 'sbx-killed', '--', 'sleep', '100');
      assert.equal(killed.stdout, 'hi\n');
      assert.equal(killed.status, 137, killed.stderr);
      assert.equal((await cli('sandbox', 'exec', 'sbx-termed', '--', 'x')).status, 143);
      assert.equal((await cli('sandbox', 'exec', 'sbx-three', '--', 'x')).status, 3);
    },
  );
});
