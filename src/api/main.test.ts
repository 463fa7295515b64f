/**
 * kilnd's process entry, run as a real process (no VMs): its state stays private. A state dir
 * left 0755 with a 0644 database (as kiln made them before) is fixed at start, and everything
 * kilnd creates afterwards (database, WAL, keys, e2b.json, pid, socket) has no group or other bits.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sleep } from '../core/proc.ts';
import { KilnClient } from '../sdk/client.ts';
import { SqliteStore } from '../store/sqlite-store.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

/** Every entry under `dir` (relative paths) with its permission bits. */
async function modes(dir: string, rel = ''): Promise<[string, number][]> {
  const out: [string, number][] = [];
  for (const name of await readdir(join(dir, rel))) {
    const p = join(rel, name);
    const st = await lstat(join(dir, p));
    out.push([p, st.mode & 0o777]);
    if (st.isDirectory()) out.push(...(await modes(dir, p)));
  }
  return out;
}

describe('kilnd keeps its state private (real process, no VMs)', () => {
  let root: string;
  let state: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-main-'));
    state = join(root, 'state');
    // A state dir as an older kiln (or a loose umask) left it: 0755, a 0644 database with data.
    await mkdir(join(state, 'vms'), { recursive: true, mode: 0o755 });
    new SqliteStore(join(state, 'kiln.db')).close();
    await writeFile(join(state, 'kilnd.log'), '', { mode: 0o644 });
    for (const d of [state, join(state, 'vms')]) await chmod(d, 0o755);
    for (const f of ['kiln.db', 'kilnd.log']) await chmod(join(state, f), 0o644);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('fixes a 0755 state dir and a 0644 database at start; nothing it creates is readable by others', async () => {
    const child = spawn(process.execPath, [MAIN], {
      env: {
        ...process.env,
        KILN_STATE_DIR: state,
        KILN_CACHE_DIR: join(root, 'cache'),
        KILN_E2B_API_PORT: '0',
        KILN_E2B_SANDBOX_PORT: '0',
        KILN_FAILPOINT: '',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    let running: [string, number][] | undefined;
    try {
      const c = new KilnClient({ socketPath: join(state, 'kilnd.sock') });
      for (
        let i = 0;
        !(await c.health().then(
          () => true,
          () => false,
        ));
        i++
      ) {
        assert.ok(i < 300 && child.exitCode === null, `kilnd did not start:\n${log}`);
        await sleep(100);
      }
      // Things that hold secrets: keys (and the admin key kept for `kiln e2b env`).
      await c.createApiKey('a');
      const env = await c.e2bEnv();
      assert.equal(readFileSync(join(state, 'e2b-env.key'), 'utf8').trim(), env.apiKey);
      running = await modes(state);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    assert.match(log, /state dir was mode 0755; made it 0700/);
    assert.match(log, /made 3 state files private/);
    const stopped = await modes(state);
    assert.ok(running);
    for (const f of [
      'kiln.db',
      'kiln.db-wal',
      'kiln.db-shm',
      'e2b-env.key',
      'e2b.json',
      'kilnd.pid',
      'kilnd.sock',
      'kilnd.log',
      'vms',
    ])
      assert.ok(
        running.some(([p]) => p === f),
        `${f} exists while kilnd runs`,
      );
    assert.equal((await lstat(state)).mode & 0o777, 0o700);
    for (const [when, all] of [
      ['running', running],
      ['stopped', stopped],
    ] as const)
      assert.deepEqual(
        all.filter(([, m]) => m & 0o077).map(([p, m]) => `${p} ${m.toString(8)}`),
        [],
        `no group or other bits anywhere under the state dir (${when})`,
      );
  });
});

describe('kilnd refuses a bad KILN_* variable (real process, no VMs)', () => {
  it('exits 1 naming the variable, before it creates its state dir', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-main-'));
    try {
      const state = join(root, 'state');
      const child = spawn(process.execPath, [MAIN], {
        env: { ...process.env, KILN_STATE_DIR: state, KILN_DISK_RESERVE_MIB: 'plenty' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let log = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      assert.equal(code, 1, log);
      assert.match(
        log,
        /kilnd did not start: KILN_DISK_RESERVE_MIB: must be a number >= 0, got \\"plenty\\"/,
      );
      assert.deepEqual(await readdir(root), [], 'no state dir was made');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
