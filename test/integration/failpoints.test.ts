/**
 * kill -9 of kilnd at EVERY journalled step of pause, snapshot, resume and create (failpoints:
 * `KILN_FAILPOINT=<op kind>:<step>` makes kilnd SIGKILL itself right after the step is recorded),
 * then a restart without it. Each step has exactly one correct outcome, decided by the point of
 * no return (`vm stopped` for a pause, `disk frozen` for a snapshot): before it the operation is
 * undone, from it on it is finished. One daemon, one sandbox reused across the steps, real guests.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { after, afterEach, before, describe, it } from 'node:test';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import { kilnSync, ownQemus, removeStateDir } from '../helpers/kilnd.ts';

/** Pause's journalled steps and the one correct state after a crash at each. */
const PAUSE: [step: string, after: 'running' | 'paused'][] = [
  ['pause:snapshot dir', 'running'],
  ['pause:source paused', 'running'],
  // The point of no return: the save is complete, the pause is finished at start-up.
  ['pause:vm stopped', 'paused'],
  // Inside that step: QEMU exited and its overlay is the layer; the VM directory is still there.
  ['qemu:overlay kept', 'paused'],
];
/** Snapshot's steps: whether the snapshot exists (restorable) after a crash; the source runs. */
const SNAPSHOT: [step: string, kept: boolean][] = [
  ['snapshot:snapshot dir', false],
  ['snapshot:source paused', false],
  ['snapshot:disk frozen', true],
];

describe('kill -9 at every journalled step (failpoints, real guests)', { timeout: 1_200_000 }, () => {
  let state: string;
  let c: KilnClient;
  let sbx = '';
  const baseEnv = (): NodeJS.ProcessEnv => ({
    ...process.env,
    KILN_STATE_DIR: state,
    KILN_E2B_API_PORT: '0',
    KILN_E2B_SANDBOX_PORT: '0',
  });
  const kiln = (env: NodeJS.ProcessEnv, ...args: string[]) => {
    const r = kilnSync(env, ...args);
    assert.equal(r.status, 0, `kiln ${args.join(' ')}: ${r.stderr}`);
  };
  const start = (failpoint?: string): void => {
    const env = baseEnv();
    delete env['KILN_FAILPOINT'];
    if (failpoint) env['KILN_FAILPOINT'] = failpoint;
    kiln(env, 'daemon', '--detach');
  };
  const stop = (): void => {
    kiln(baseEnv(), 'daemon', 'stop');
  };
  /** This state dir's QEMU processes only (their paths are under it), sandboxes and helpers. */
  const qemus = (): string[] => ownQemus(state);
  const vmDirs = (): string[] => (existsSync(`${state}/vms`) ? readdirSync(`${state}/vms`).sort() : []);
  const cat = async (id: string): Promise<string> => {
    let out = '';
    await c.exec(id, 'cat /home/user/f', { onStdout: (x) => (out += x.toString()) });
    return out;
  };
  /** Runs `action`, which kilnd must not survive: it dies at `failpoint`, and says so in its log. */
  const dieAt = async (failpoint: string, action: () => Promise<unknown>): Promise<void> => {
    start(failpoint);
    const pid = Number(readFileSync(`${state}/kilnd.pid`, 'utf8'));
    await assert.rejects(action(), `kilnd answered instead of dying at ${failpoint}`);
    for (let i = 0; pidAlive(pid); i++) {
      assert.ok(i < 600, `kilnd ${pid} still alive 60 s after its failpoint`);
      await sleep(100);
    }
    assert.ok(
      readFileSync(`${state}/kilnd.log`, 'utf8').includes(`failpoint ${failpoint} hit`),
      `kilnd died at ${failpoint}`,
    );
    start();
  };
  const openOps = (): number => {
    const db = new DatabaseSync(`${state}/kiln.db`, { readOnly: true });
    try {
      return (db.prepare(`SELECT id FROM operations WHERE state = 'running'`).all() as unknown[]).length;
    } finally {
      db.close();
    }
  };
  /** The one state every crash must come back to: the sandbox runs, one QEMU, nothing left over. */
  const assertOnlySandboxRuns = async (): Promise<void> => {
    assert.equal((await c.getSandbox(sbx)).state, 'running');
    assert.equal(await cat(sbx), 'kept\n', 'the guest is intact');
    assert.deepEqual(vmDirs(), [sbx], 'one VM directory: the sandbox');
    assert.equal(qemus().length, 1, 'one QEMU: the sandbox');
    assert.equal(openOps(), 0, 'no operation left open');
  };

  before(async () => {
    state = await mkdtemp('/tmp/kiln-fp-');
    c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
    start();
    await c.buildTemplate({ name: 'base' });
    sbx = (await c.createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
    await c.exec(sbx, 'echo kept > /home/user/f');
    stop(); // each test starts the daemon it needs
  });
  // A failed test must not leave its daemon to the next one.
  afterEach(() => {
    stop();
  });
  after(async () => {
    await removeStateDir(baseEnv(), state);
  });

  it('the steps covered are exactly the steps a pause and a snapshot journal', async () => {
    start();
    await c.pause(sbx);
    await c.resume(sbx);
    await c.snapshot(sbx, { name: 'probe' });
    const db = new DatabaseSync(`${state}/kiln.db`, { readOnly: true });
    const steps = (kind: string): string[] => {
      const r = db
        .prepare(`SELECT steps FROM operations WHERE kind = ? AND state = 'done' ORDER BY started_at DESC`)
        .get(kind) as { steps: string };
      return (JSON.parse(r.steps) as { name: string }[]).map((s) => `${kind}:${s.name}`);
    };
    try {
      assert.deepEqual(
        steps('pause'),
        PAUSE.map(([s]) => s).filter((s) => s.startsWith('pause:')),
      );
      assert.deepEqual(
        steps('snapshot'),
        SNAPSHOT.map(([s]) => s),
      );
      assert.deepEqual(steps('resume'), ['resume:vm']);
      assert.deepEqual(steps('create'), ['create:sandbox record', 'create:vm']);
    } finally {
      db.close();
    }
    stop();
  });

  for (const [step, outcome] of PAUSE) {
    it(`pause, kill -9 at "${step}": the sandbox is ${outcome}, no vms/<id> left, resume works`, async () => {
      await dieAt(step, () => c.pause(sbx));
      assert.equal((await c.getSandbox(sbx)).state, outcome);
      if (outcome === 'paused') {
        assert.deepEqual(vmDirs(), [], 'a paused sandbox has no VM directory');
        assert.deepEqual(qemus(), [], 'and no QEMU');
        assert.equal(openOps(), 0, 'the pause was finished');
        // Its pause snapshot is complete: the sandbox resumes from it with its file.
        await c.resume(sbx);
      }
      await assertOnlySandboxRuns();
      stop();
    });
  }

  for (const [step, kept] of SNAPSHOT) {
    it(`snapshot, kill -9 at "${step}": the source runs; the snapshot is ${kept ? 'finished' : 'undone'}`, async () => {
      const name = `at-${step.split(':')[1]?.replace(/ /g, '-') ?? ''}`;
      const names = async () => (await c.listSnapshots({ kind: 'snapshot' })).items.map((x) => x.name);
      start();
      const before = await names();
      stop();
      await dieAt(step, () => c.snapshot(sbx, { name }));
      await assertOnlySandboxRuns();
      assert.deepEqual(await names(), kept ? [...before, name] : before);
      assert.deepEqual(
        readdirSync(`${state}/data/snapshots`).filter((f) => f.startsWith('.staging')),
        [],
      );
      if (kept) {
        const r = await c.restoreSnapshot(name);
        assert.equal(await cat(r.sandboxId), 'kept\n', 'the finished snapshot restores');
        await c.killSandbox(r.sandboxId);
      }
      stop();
    });
  }

  it('resume, kill -9 at "resume:vm": the sandbox is paused again and resumes intact', async () => {
    start();
    await c.pause(sbx);
    stop();
    await dieAt('resume:vm', () => c.resume(sbx));
    assert.equal((await c.getSandbox(sbx)).state, 'paused');
    assert.deepEqual(vmDirs(), []);
    await c.resume(sbx);
    await assertOnlySandboxRuns();
    stop();
  });

  for (const step of ['create:sandbox record', 'create:vm']) {
    it(`create, kill -9 at "${step}": the new sandbox is dead (failed to start), no VM`, async () => {
      start();
      const dead = async () => (await c.listSandboxes({ states: ['dead'] })).items;
      const before = (await dead()).length;
      stop();
      await dieAt(step, () => c.createSandbox({ template: 'base' }));
      const now = await dead();
      assert.equal(now.length, before + 1, 'the interrupted create is recorded, once');
      assert.equal(now.at(-1)?.endReason, 'failed to start');
      await assertOnlySandboxRuns();
      stop();
    });
  }
});
