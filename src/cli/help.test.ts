import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { dispatch } from './dispatch.ts';
import { offlineContext, runCli as kiln } from '../../test/helpers/cli.ts';
import { COMMANDS, GROUPS } from './help.ts';

// The commands the dispatcher knows; the help table must name exactly these.
const EXPECTED = [
  'run',
  'sandbox create',
  'sandbox list',
  'sandbox get',
  'sandbox kill',
  'sandbox stats',
  'sandbox url',
  'sandbox logs',
  'sandbox exec',
  'sandbox timeout',
  'sandbox pause',
  'sandbox resume',
  'sandbox fork',
  'sandbox network',
  'snapshot create',
  'snapshot list',
  'snapshot get',
  'snapshot rm',
  'snapshot restore',
  'snapshot export',
  'snapshot import',
  'template list',
  'template get',
  'template rm',
  'template pool',
  'template gc',
  'template build',
  'image build',
  'image list',
  'api-key create',
  'api-key list',
  'api-key delete',
  'volume create',
  'volume list',
  'volume rm',
  'workspace export',
  'workspace push',
  'e2b env',
  'dashboard',
  'daemon',
  'daemon stop',
  'help',
];

/** Runs the dispatcher in-process, capturing what it prints; any daemon use fails the test. */
async function inProcess(args: string[]): Promise<{ code: number; stdout: string }> {
  const printed: string[] = [];
  const original = console.log;
  console.log = (...a: unknown[]) => {
    printed.push(a.map(String).join(' '));
  };
  try {
    const connects: string[] = [];
    const res = { code: await dispatch(offlineContext(connects), args), stdout: printed.join('\n') };
    assert.deepEqual(connects, [], `${args.join(' ')} reached for a daemon`);
    return res;
  } finally {
    console.log = original;
  }
}

test('every command and subcommand answers --help with its usage and options, exit 0', async () => {
  assert.deepEqual(Object.keys(COMMANDS).sort(), [...EXPECTED].sort());
  const runs: { args: string[]; names: string }[] = [];
  for (const path of EXPECTED) {
    const words = path.split(' ');
    runs.push({ args: [...words, '--help'], names: `kiln ${path}` });
    runs.push({ args: [...words, '-h'], names: `kiln ${path}` });
    if (path !== 'help') runs.push({ args: ['help', ...words], names: `kiln ${path}` });
  }
  // Help wins over positionals and other options; aliases have the help of what they alias.
  runs.push({ args: ['sandbox', 'get', 'sbx-1', '--json', '--help'], names: 'kiln sandbox get ID' });
  runs.push({ args: ['image', 'ls', '--help'], names: 'kiln image list' });
  for (const group of Object.keys(GROUPS)) runs.push({ args: [group, '--help'], names: `kiln ${group}` });
  runs.push({ args: ['--help'], names: 'kiln sandbox list' });
  runs.push({ args: ['help'], names: 'kiln sandbox list' });
  const out: Record<string, string> = {};
  for (const r of runs) {
    const what = r.args.join(' ');
    const res = await inProcess(r.args);
    assert.equal(res.code, 0, what);
    assert.ok(res.stdout.includes(r.names), `${what} names "${r.names}":\n${res.stdout}`);
    assert.match(res.stdout, /usage:/, what);
    out[what] = res.stdout;
  }
  // Options are listed with what they do; the exit codes are documented.
  assert.match(out['sandbox create --help'] ?? '', /--template T\s+template to start from/);
  assert.match(out['sandbox list --help'] ?? '', /--all\s+include ended \(dead\) sandboxes/);
  assert.match(out['sandbox exec --help'] ?? '', /128\+N\s+run, sandbox exec, daemon: killed by signal N/);
  assert.match(out['--help'] ?? '', /exit codes:/);
});

test('--help through the real entry point exits 0 and starts nothing', async () => {
  const home = mkdtempSync(join(tmpdir(), 'kiln-help-'));
  try {
    const runs: [string[], string][] = [
      [['sandbox', 'create', '--help'], 'usage: kiln sandbox create'],
      [['daemon', 'stop', '--help'], 'usage: kiln daemon stop'],
      [['help', 'snapshot', 'export'], 'usage: kiln snapshot export'],
      [['--help'], 'exit codes:'],
    ];
    for (const [args, expected] of runs) {
      const r = await kiln(home, args);
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stdout.includes(expected), args.join(' '));
    }
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
