/**
 * kilnd end to end, as a user drives it: the CLI (which starts the daemon by itself), the sdk
 * over the unix socket, real QEMU guests. Includes kill -9 of the daemon with sandboxes running:
 * after a restart the API shows exactly the live sandboxes, the QEMU processes match them, and
 * nothing is left over (kill -9 in the middle of an operation: failpoints.test.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import { CLI, kilnSync, removeStateDir, type CliResult } from '../helpers/kilnd.ts';

describe('kilnd end to end (real guests)', { timeout: 900_000 }, () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  let c: KilnClient;
  const kiln = (...args: string[]): CliResult => kilnSync(env, ...args);
  const qemuFor = (): string[] => {
    try {
      // This test's VMs only (their paths are under its state dir), whatever else runs here.
      return execFileSync('pgrep', ['-f', `${state}/vms/sbx-`], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean);
    } catch {
      return [];
    }
  };
  /** What those QEMU processes are (for assertion messages). */
  const whatAre = (pids: string[]): string =>
    pids.length
      ? execFileSync('ps', ['-o', 'pid,lstart,args', '-p', pids.join(',')], { encoding: 'utf8' })
      : '';
  const liveIds = async (): Promise<string[]> =>
    (await c.listSandboxes({ states: ['creating', 'running', 'paused'] })).items
      .map((s) => s.sandboxId)
      .sort();

  before(async () => {
    state = await mkdtemp('/tmp/kiln-e2e-');
    // Ports 0: another run's (or a user's) kilnd may hold the defaults.
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
  });
  after(() => removeStateDir(env, state));

  it('kiln run starts the daemon, builds the base template, runs the command, passes its exit code', () => {
    const r = kiln('run', '--', 'sh', '-c', 'echo "hi from $(whoami)"; echo oops >&2; exit 3');
    assert.equal(r.status, 3, r.stderr);
    assert.equal(r.stdout, 'hi from user\n');
    assert.match(r.stderr, /oops/);
    assert.ok(statSync(`${state}/kilnd.sock`).isSocket());
    assert.equal(statSync(`${state}/kilnd.sock`).mode & 0o777, 0o600, 'the socket is private');
  });

  it('kiln sandbox exec streams piped input to the command: text, MBs of binary, a tar', () => {
    const made = kiln('sandbox', 'create', '--json');
    assert.equal(made.status, 0, made.stderr);
    const id = (JSON.parse(made.stdout) as { sandboxId: string }).sandboxId;
    const exec = (input: Buffer, ...words: string[]) =>
      spawnSync(process.execPath, [CLI, 'sandbox', 'exec', id, '--', ...words], {
        env,
        input,
        timeout: 300_000,
        maxBuffer: 64 << 20,
      });
    const hi = exec(Buffer.from('hi\n'), 'cat');
    assert.equal(hi.status, 0, hi.stderr.toString());
    assert.equal(hi.stdout.toString(), 'hi\n');
    const bin = randomBytes(3 << 20);
    const back = exec(bin, 'cat');
    assert.equal(back.status, 0, back.stderr.toString());
    assert.equal(back.stdout.length, bin.length);
    assert.ok(back.stdout.equals(bin), 'the bytes came back unchanged');
    const sum = exec(bin, 'sha256sum');
    assert.equal(sum.stdout.toString(), `${createHash('sha256').update(bin).digest('hex')}  -\n`);
    // The benchmark's baseline: a host tar unpacked in the guest.
    const dir = mkdtempSync('/tmp/kiln-e2e-tar-');
    writeFileSync(`${dir}/data.bin`, bin);
    const tar = execFileSync('tar', ['-c', '-C', dir, 'data.bin'], { maxBuffer: 64 << 20 });
    rmSync(dir, { recursive: true, force: true });
    const x = exec(tar, 'sh', '-c', 'mkdir -p ~/t && tar -x -C ~/t && sha256sum < ~/t/data.bin');
    assert.equal(x.status, 0, x.stderr.toString());
    assert.equal(x.stdout.toString(), sum.stdout.toString());
    // A command that stops reading early: its own exit, no error about the rest of the input.
    const head = exec(Buffer.from('one\n'.repeat(1 << 18)), 'head', '-n', '1');
    assert.deepEqual([head.status, head.stdout.toString(), head.stderr.toString()], [0, 'one\n', '']);
    assert.equal(kiln('sandbox', 'kill', id).status, 0);
  });

  it('five sandboxes at once; each runs commands; kill leaves no VM', async () => {
    const made = await Promise.all(
      [1, 2, 3, 4, 5].map((i) => c.createSandbox({ template: 'base', metadata: { n: String(i) } })),
    );
    assert.equal(new Set(made.map((s) => s.sandboxId)).size, 5);
    for (const s of made) {
      let out = '';
      const r = await c.exec(s.sandboxId, 'echo $((6*7))', { onStdout: (b) => (out += b.toString()) });
      assert.deepEqual([r.exitCode, out], [0, '42\n']);
    }
    assert.equal((await c.listSandboxes({ metadata: { n: '3' } })).items.length, 1);
    // Secrets at rest: the database, VM dirs, overlays (written by qemu-img), serial logs and QMP
    // sockets (QEMU's), snapshot files: nothing under the state dir is open to group or others.
    const open: string[] = [];
    const walk = (rel: string): void => {
      for (const name of readdirSync(`${state}/${rel}`)) {
        const p = rel ? `${rel}/${name}` : name;
        const st = lstatSync(`${state}/${p}`);
        if (st.mode & 0o077) open.push(`${p} ${(st.mode & 0o777).toString(8)}`);
        if (st.isDirectory()) walk(p);
      }
    };
    walk('');
    assert.equal(statSync(state).mode & 0o777, 0o700);
    for (const s of made) {
      assert.equal(statSync(`${state}/vms/${s.sandboxId}`).mode & 0o777, 0o700);
      assert.equal(statSync(`${state}/vms/${s.sandboxId}/overlay.qcow2`).mode & 0o777, 0o600);
    }
    assert.deepEqual(open, [], 'no group or other bits under the state dir');
    const st = await c.stats(made[0]?.sandboxId ?? '');
    assert.ok(st.rssBytes > 0 && st.pssBytes > 0);
    const list = kiln('sandbox', 'list', '--state', 'running', '--json');
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 5);
    await Promise.all(made.map((s) => c.killSandbox(s.sandboxId)));
    assert.deepEqual(await liveIds(), []);
    assert.deepEqual(qemuFor(), [], whatAre(qemuFor()));
  });

  it('a sandbox past its timeout is killed by the reaper', async () => {
    const s = await c.createSandbox({ template: 'base', timeoutS: 2 });
    const t0 = Date.now();
    while ((await c.getSandbox(s.sandboxId)).state !== 'dead') {
      assert.ok(Date.now() - t0 < 15_000, 'reaped in time');
      await sleep(200);
    }
    assert.equal((await c.getSandbox(s.sandboxId)).endReason, 'timeout');
  });

  // kill -9 in the middle of an operation (create, pause, snapshot, resume) is failpoints.test.ts's:
  // there each crash point is hit exactly and has one correct outcome.
  it('kill -9 of kilnd with 3 sandboxes running: a restart re-adopts exactly them', async () => {
    const three = await Promise.all([1, 2, 3].map(() => c.createSandbox({ template: 'base' })));
    const pid = Number(readFileSync(`${state}/kilnd.pid`, 'utf8'));
    process.kill(pid, 'SIGKILL');
    while (pidAlive(pid)) await sleep(20); // the kernel reaps it at once; the socket stays
    assert.equal(kiln('daemon', '--detach').status, 0);
    const live = await liveIds();
    assert.deepEqual(live, three.map((s) => s.sandboxId).sort(), 'exactly the 3 survived the restart');
    for (const id of live) {
      const r = await c.exec(id, 'echo alive');
      assert.equal(r.exitCode, 0);
    }
    assert.equal(
      qemuFor().length,
      live.length,
      `one QEMU per live sandbox, no orphan: ${whatAre(qemuFor())}`,
    );
    assert.deepEqual(readdirSync(`${state}/vms`).sort(), live, 'no VM directory without a sandbox');
    assert.deepEqual(
      readdirSync(`${state}/data/snapshots`).filter((f) => f.startsWith('.staging')),
      [],
    );
    for (const id of live) await c.killSandbox(id);
    assert.equal(kiln('daemon', 'stop').status, 0);
    assert.deepEqual(qemuFor(), []);
    assert.equal(existsSync(`${state}/kilnd.sock`), false);
    assert.deepEqual(readdirSync(`${state}/vms`), []);
  });

  it('the CLI on snapshot flows: create, list, fork, restore with metadata and env, export; import and rm refused while in use', async () => {
    assert.equal(kiln('daemon', '--detach').status, 0);
    const a = (await c.createSandbox({ template: 'base' })).sandboxId;
    await c.exec(a, 'echo kept > /home/user/f');
    const cat = async (id: string): Promise<string> => {
      let out = '';
      await c.exec(id, 'cat /home/user/f', { onStdout: (x) => (out += x.toString()) });
      return out;
    };
    const made = kiln('snapshot', 'create', a, '--name', 'cli', '--json');
    assert.equal(made.status, 0, made.stderr);
    assert.equal((JSON.parse(made.stdout) as { name: string }).name, 'cli');
    const listed = kiln('snapshot', 'list');
    assert.match(listed.stdout, /cli\s+snapshot/);
    const forked = kiln('sandbox', 'fork', a, '--count', '2', '--json');
    assert.equal(forked.status, 0, forked.stderr);
    const clones = (
      JSON.parse(forked.stdout) as { results: { sandbox: { sandboxId: string } }[] }
    ).results.map((r) => r.sandbox.sandboxId);
    assert.equal(clones.length, 2);
    for (const id of clones) assert.equal(await cat(id), 'kept\n');
    const restoredCli = kiln(
      'snapshot',
      'restore',
      'cli',
      '--metadata',
      'from=cli',
      '--env',
      'E=7',
      '--json',
    );
    assert.equal(restoredCli.status, 0, restoredCli.stderr);
    const restored = JSON.parse(restoredCli.stdout) as {
      sandboxId: string;
      metadata: Record<string, string>;
    };
    assert.deepEqual(restored.metadata, { from: 'cli' });
    assert.equal(await cat(restored.sandboxId), 'kept\n');
    let env7 = '';
    await c.exec(restored.sandboxId, 'echo $E', { onStdout: (x) => (env7 += x.toString()) });
    assert.equal(env7, '7\n');
    clones.push(restored.sandboxId);
    const createdCli = kiln('sandbox', 'create', '--metadata', 'k=v', '--timeout', '120', '--json');
    assert.equal(createdCli.status, 0, createdCli.stderr);
    const created = JSON.parse(createdCli.stdout) as { sandboxId: string; metadata: Record<string, string> };
    assert.deepEqual(created.metadata, { k: 'v' });
    clones.push(created.sandboxId);
    const tar = `${state}/cli.tar`;
    const exported = kiln('snapshot', 'export', 'cli', '-o', tar);
    assert.equal(exported.status, 0, exported.stderr);
    assert.ok(statSync(tar).size > 100 * 2 ** 20);
    const dup = kiln('snapshot', 'import', tar);
    assert.equal(dup.status, 1);
    assert.match(dup.stderr, /already_exists: a snapshot named "cli" already exists/);
    // Deleted while its source and restores run on its layer: gone at once, they run on.
    const deleted = kiln('snapshot', 'rm', 'cli');
    assert.equal(deleted.status, 0, deleted.stderr);
    const gone = kiln('snapshot', 'get', 'cli');
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /not_found: snapshot "cli" does not exist/);
    assert.equal(await cat(restored.sandboxId), 'kept\n');
    for (const id of [...clones, a]) await c.killSandbox(id);
    assert.equal(kiln('daemon', 'stop').status, 0);
    assert.deepEqual(qemuFor(), []);
  });

  it('errors name what was wrong and carry the op id', () => {
    const r = kiln('sandbox', 'get', 'sbx-does-not-exist');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not_found: sandbox "sbx-does-not-exist" does not exist \(op req-[a-z0-9]+\)/);
    kiln('daemon', 'stop');
  });
});
