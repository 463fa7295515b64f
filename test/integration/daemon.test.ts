/**
 * kilnd end to end, as a user drives it: the CLI (which starts the daemon by itself), the sdk
 * over the unix socket, real QEMU guests. Includes kill -9 of the daemon with sandboxes running
 * and a create in flight: after a restart the API shows exactly the live sandboxes, the QEMU
 * processes match them, and nothing is left over.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

describe('kilnd end to end (real guests)', { timeout: 900_000 }, () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  let c: KilnClient;
  const kiln = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout: 600_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const qemuFor = (): string[] => {
    try {
      return execFileSync('pgrep', ['-f', `kiln-sbx-`], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean);
    } catch {
      return [];
    }
  };
  const liveIds = async (): Promise<string[]> =>
    (await c.listSandboxes({ states: ['creating', 'running', 'paused'] })).items
      .map((s) => s.sandboxId)
      .sort();

  before(async () => {
    state = await mkdtemp('/tmp/kiln-e2e-');
    env = { ...process.env, KILN_STATE_DIR: state };
    c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
  });
  after(async () => {
    kiln('daemon', 'stop');
    for (const pid of qemuFor()) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    await rm(state, { recursive: true, force: true });
  });

  it('kiln run starts the daemon, builds the base template, runs the command, passes its exit code', () => {
    const r = kiln('run', '--', 'sh', '-c', 'echo "hi from $(whoami)"; echo oops >&2; exit 3');
    assert.equal(r.status, 3, r.stderr);
    assert.equal(r.stdout, 'hi from user\n');
    assert.match(r.stderr, /oops/);
    assert.ok(statSync(`${state}/kilnd.sock`).isSocket());
    assert.equal(statSync(`${state}/kilnd.sock`).mode & 0o777, 0o600, 'the socket is private');
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
    const st = await c.stats(made[0]?.sandboxId ?? '');
    assert.ok(st.rssBytes > 0 && st.pssBytes > 0);
    const list = kiln('sandbox', 'list', '--state', 'running', '--json');
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 5);
    await Promise.all(made.map((s) => c.killSandbox(s.sandboxId)));
    assert.deepEqual(await liveIds(), []);
    assert.deepEqual(qemuFor(), []);
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

  it('kill -9 of kilnd with 3 sandboxes running and a create in flight: a restart re-adopts or cleans everything', async () => {
    const three = await Promise.all([1, 2, 3].map(() => c.createSandbox({ template: 'base' })));
    const pid = Number(readFileSync(`${state}/kilnd.pid`, 'utf8'));
    const inflight = c.createSandbox({ template: 'base' }).then(
      (s) => s.sandboxId,
      () => undefined,
    );
    await sleep(300); // the create is restoring its VM
    process.kill(pid, 'SIGKILL');
    await inflight;
    assert.equal(kiln('daemon', '--detach').status, 0);
    const live = await liveIds();
    for (const s of three) assert.ok(live.includes(s.sandboxId), `${s.sandboxId} survived the restart`);
    assert.ok(
      live.length === 3 || live.length === 4,
      `only the 3 (+ the in-flight one if it completed): ${live.join(',')}`,
    );
    for (const id of live) {
      const r = await c.exec(id, 'echo alive');
      assert.equal(r.exitCode, 0);
    }
    assert.equal(qemuFor().length, live.length, 'one QEMU per live sandbox, no orphan');
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

  it('errors name what was wrong and carry the op id', () => {
    const r = kiln('sandbox', 'get', 'sbx-does-not-exist');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not_found: sandbox "sbx-does-not-exist" does not exist \(op req-[a-z0-9]+\)/);
    kiln('daemon', 'stop');
  });
});
