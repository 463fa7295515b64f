import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COMMANDS, GROUPS } from './help.ts';

const CLI = fileURLToPath(new URL('./main.ts', import.meta.url));

function kiln(
  home: string,
  args: string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, KILN_CACHE_DIR: join(home, 'cache'), KILN_STATE_DIR: join(home, 'state') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (status) => {
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs the jobs a few at a time (two cores, shared). */
async function pool<T, R>(items: T[], n: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
  return out;
}

// The commands the dispatcher knows; the help table must name exactly these.
const EXPECTED = [
  'run',
  'sandbox create',
  'sandbox list',
  'sandbox get',
  'sandbox kill',
  'sandbox stats',
  'sandbox logs',
  'sandbox exec',
  'sandbox timeout',
  'sandbox pause',
  'sandbox resume',
  'sandbox fork',
  'snapshot create',
  'snapshot list',
  'snapshot get',
  'snapshot rm',
  'snapshot restore',
  'snapshot export',
  'snapshot import',
  'template list',
  'template build',
  'image build',
  'image list',
  'api-key create',
  'api-key list',
  'api-key delete',
  'e2b env',
  'daemon',
  'daemon stop',
  'help',
];

test('every command and subcommand answers --help with its usage and options, exit 0, touching nothing', async () => {
  assert.deepEqual(Object.keys(COMMANDS).sort(), [...EXPECTED].sort());
  const home = mkdtempSync(join(tmpdir(), 'kiln-help-'));
  try {
    const runs: { args: string[]; names: string }[] = [];
    for (const path of EXPECTED) {
      const words = path.split(' ');
      runs.push({ args: [...words, '--help'], names: `kiln ${path}` });
    }
    // `kiln help X Y` is the same dispatch (a few suffice: each spawn costs half a second).
    runs.push({ args: ['help', 'sandbox', 'exec'], names: 'kiln sandbox exec' });
    runs.push({ args: ['help', 'daemon', 'stop'], names: 'kiln daemon stop' });
    // Help wins over positionals and other options, and -h is the same as --help.
    runs.push({ args: ['sandbox', 'get', 'sbx-1', '--json', '--help'], names: 'kiln sandbox get ID' });
    runs.push({ args: ['sandbox', 'create', '-h'], names: 'kiln sandbox create' });
    runs.push({ args: ['image', 'ls', '--help'], names: 'kiln image list' });
    for (const group of Object.keys(GROUPS)) runs.push({ args: [group, '--help'], names: `kiln ${group}` });
    runs.push({ args: ['--help'], names: 'kiln sandbox list' });
    runs.push({ args: ['help'], names: 'kiln sandbox list' });
    const results = await pool(runs, 4, (r) => kiln(home, r.args));
    runs.forEach((r, i) => {
      const res = results[i];
      const what = r.args.join(' ');
      assert.equal(res?.status, 0, `${what}: ${res?.stderr ?? ''}`);
      assert.ok(res.stdout.includes(r.names), `${what} names "${r.names}":\n${res.stdout}`);
      assert.match(res.stdout, /usage:/, what);
    });
    // Options are listed with what they do.
    const create = results[runs.findIndex((r) => r.args.join(' ') === 'sandbox create --help')];
    assert.match(create?.stdout ?? '', /--template T\s+template to start from/);
    const list = results[runs.findIndex((r) => r.args.join(' ') === 'sandbox list --help')];
    assert.match(list?.stdout ?? '', /--all\s+include ended \(dead\) sandboxes/);
    const exec = results[runs.findIndex((r) => r.args.join(' ') === 'sandbox exec --help')];
    assert.match(exec?.stdout ?? '', /128\+N\s+run, sandbox exec, daemon: killed by signal N/);
    const top = results[runs.findIndex((r) => r.args.join(' ') === '--help')];
    assert.match(top?.stdout ?? '', /exit codes:/);
    assert.deepEqual(readdirSync(home), [], 'help started no daemon and built nothing');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('help for an unknown command is a usage error (exit 2)', async () => {
  const home = mkdtempSync(join(tmpdir(), 'kiln-help-'));
  try {
    for (const args of [
      ['sandbox', 'frob', '--help'],
      ['help', 'frob'],
      ['frob', '--help'],
    ]) {
      const r = await kiln(home, args);
      assert.equal(r.status, 2, args.join(' '));
      assert.match(r.stderr, /unknown command "(sandbox )?frob"/, args.join(' '));
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
