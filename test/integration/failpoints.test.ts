/**
 * kill -9 of kilnd at EVERY journalled step of create, kill, snapshot, pause, resume, fork and
 * import (failpoints: `KILN_FAILPOINT=<op kind>:<step>` makes kilnd SIGKILL itself right after
 * the step is recorded), then a restart without it. Each step has exactly one correct outcome:
 * a snapshot or pause is undone before its point of no return (`disk frozen`, `vm stopped`) and
 * finished from it on; a create or import is undone; a kill is always finished, with the end
 * reason it recorded. One daemon, one template and one sandbox reused across the steps, real
 * guests; imports go to a new host (state dir) each. After every restart, this kilnd's network
 * namespaces and host links are exactly its QEMUs' slots and the ready pool (`dieAt`). The last
 * test checks that the steps covered are exactly the steps the journal records for each operation.
 */
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { CrashDaemon } from '../helpers/crash-daemon.ts';

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
/** A crash in a resume (before its VM, or with its network slot taken): paused again. */
const RESUME = ['resume:vm', 'resume:network'];
/**
 * A crash in a create: the new sandbox is recorded dead (failed to start), once; at `network`
 * its slot is taken and journalled but no VM started: the slot is released at start-up.
 */
const CREATE = ['create:sandbox record', 'create:vm', 'create:network'];
/** A crash in a kill (here the reaper's, reason `timeout`): finished, dead with that reason. */
const KILL = ['kill:killing', 'kill:vm killed'];
/**
 * A fork of 2 = its snapshot (journalled as `fork`, a snapshot's steps) + one create per clone
 * (`create:` steps, hit by the first clone to reach them). After a crash: whether the fork's
 * snapshot is kept (the source's disk stands on it from `disk frozen`) and how many clones are
 * recorded, all dead (failed to start). The clones' creates start together: the first clone
 * dies at its record before the second's is written; at `vm`, both records are written (each
 * create records before its first wait) and no VM has been started.
 */
const FORK: [step: string, kept: boolean, clones: number][] = [
  ['fork:snapshot dir', false, 0],
  ['fork:source paused', false, 0],
  ['fork:disk frozen', true, 0],
  ['create:sandbox record', true, 1],
  ['create:vm', true, 2],
  ['create:network', true, 2],
];
/** A crash in an import: undone, nothing of it left; the archive imports again. */
const IMPORT = [
  'import:staging dir',
  'import:template record',
  'import:snapshot dir',
  'import:snapshot record',
];

describe('kill -9 at every journalled step (failpoints, real guests)', { timeout: 1_800_000 }, () => {
  let main: CrashDaemon;
  let sbx = '';
  /** The exported archive of a snapshot of `sbx` (made on first use), and that snapshot's id. */
  let exported: { file: string; id: string } | undefined;
  const c = () => main.c;
  /**
   * Resumes the long-lived sandbox for as long as it was created for: a resume's end time
   * restarts at its timeoutS (default 300 s, as E2B's), which a slow run outlasts (the reaper
   * then ended the sandbox before the last test).
   */
  const resume = () => c().resume(sbx, { timeoutS: 3600 });
  const cat = (id: string, d = main) => d.sh(id, 'cat /home/user/f');
  /** The one state every crash must come back to: the sandbox runs, one QEMU, nothing left over. */
  const assertOnlySandboxRuns = async (): Promise<void> => {
    const now = await c().getSandbox(sbx);
    assert.equal(now.state, 'running', main.diagnosis(sbx));
    // Far from its end: no later test may find it ended by the reaper.
    assert.ok(Date.parse(now.endAt) - Date.now() > 30 * 60_000, `it ends at ${now.endAt}`);
    assert.equal(await cat(sbx), 'kept\n', `the guest is intact\n${main.diagnosis(sbx)}`);
    assert.deepEqual(main.vmDirs(), [sbx], 'one VM directory: the sandbox');
    assert.equal(main.qemus().length, 1, 'one QEMU: the sandbox');
    assert.equal(main.openOps(), 0, 'no operation left open');
    assert.deepEqual(
      main.snapshotDirs(),
      main.snapshotIds(),
      'a directory per snapshot record, nothing else',
    );
  };
  const archive = async (): Promise<{ file: string; id: string }> => {
    if (exported) return exported;
    main.start();
    const snap = await c().snapshot(sbx, { name: 'exported' });
    const file = `${main.state}.tar`;
    await c().exportSnapshot(snap.snapshotId, createWriteStream(file));
    main.stop();
    exported = { file, id: snap.snapshotId };
    return exported;
  };

  before(async () => {
    main = new CrashDaemon(await mkdtemp('/tmp/kiln-fp-'));
    main.start();
    await c().buildTemplate({ name: 'base' });
    sbx = (await c().createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
    await c().exec(sbx, 'echo kept > /home/user/f');
    main.stop(); // each test starts the daemon it needs
  });
  // A failed test must not leave its daemon to the next one.
  afterEach(() => {
    main.stop();
  });
  after(async () => {
    await main.cleanUp();
    await rm(main.state, { recursive: true, force: true });
    await rm(`${main.state}.tar`, { force: true });
  });

  for (const [step, outcome] of PAUSE) {
    it(`pause, kill -9 at "${step}": the sandbox is ${outcome}, no vms/<id> left, resume works`, async () => {
      await main.dieAt(step, () => c().pause(sbx));
      assert.equal((await c().getSandbox(sbx)).state, outcome);
      if (outcome === 'paused') {
        assert.deepEqual(main.vmDirs(), [], 'a paused sandbox has no VM directory');
        assert.deepEqual(main.qemus(), [], 'and no QEMU');
        assert.equal(main.openOps(), 0, 'the pause was finished');
        // Its pause snapshot is complete: the sandbox resumes from it with its file.
        await resume();
      }
      await assertOnlySandboxRuns();
    });
  }

  for (const [step, kept] of SNAPSHOT) {
    it(`snapshot, kill -9 at "${step}": the source runs; the snapshot is ${kept ? 'finished' : 'undone'}`, async () => {
      const name = `at-${step.split(':')[1]?.replace(/ /g, '-') ?? ''}`;
      const names = async () => (await c().listSnapshots({ kind: 'snapshot' })).items.map((x) => x.name);
      main.start();
      const before = await names();
      main.stop();
      await main.dieAt(step, () => c().snapshot(sbx, { name }));
      await assertOnlySandboxRuns();
      assert.deepEqual(await names(), kept ? [...before, name] : before);
      if (kept) {
        const r = await c().restoreSnapshot(name);
        assert.equal(await cat(r.sandboxId), 'kept\n', 'the finished snapshot restores');
        await c().killSandbox(r.sandboxId);
      }
    });
  }

  for (const step of RESUME) {
    it(`resume, kill -9 at "${step}": the sandbox is paused again and resumes intact`, async () => {
      main.start();
      await c().pause(sbx);
      main.stop();
      await main.dieAt(step, () => resume());
      assert.equal((await c().getSandbox(sbx)).state, 'paused');
      assert.deepEqual(main.vmDirs(), []);
      assert.deepEqual(main.qemus(), []);
      await resume();
      await assertOnlySandboxRuns();
      await main.assertNetworks('after the resume');
    });
  }

  for (const step of CREATE) {
    it(`create, kill -9 at "${step}": the new sandbox is dead (failed to start), no VM`, async () => {
      main.start();
      const dead = async () => (await c().listSandboxes({ states: ['dead'] })).items;
      const before = (await dead()).length;
      main.stop();
      await main.dieAt(step, () => c().createSandbox({ template: 'base' }));
      const now = await dead();
      assert.equal(now.length, before + 1, 'the interrupted create is recorded, once');
      assert.equal(now.at(-1)?.endReason, 'failed to start');
      await assertOnlySandboxRuns();
    });
  }

  for (const step of KILL) {
    it(`kill by the reaper, kill -9 at "${step}": dead with reason timeout, its VM and vms/<id> gone`, async () => {
      let victim = '';
      // The reaper kills it a second after setTimeout has answered.
      const expire = async () => {
        victim = (await c().createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
        await c().setTimeout(victim, 1);
      };
      await main.dieAt(step, expire, { answers: true });
      const v = await c().getSandbox(victim);
      assert.equal(v.state, 'dead');
      assert.equal(v.endReason, 'timeout', 'the reason its kill recorded');
      assert.deepEqual(
        main.rows(`SELECT state FROM operations WHERE kind = 'kill' AND subject = ?`, victim),
        [{ state: 'done' }],
        'the kill was finished, not undone',
      );
      await assertOnlySandboxRuns();
      if (step !== KILL.at(-1)) return;
      // The system still kills: a running sandbox, by the API.
      const again = await c().createSandbox({ template: 'base' });
      await c().killSandbox(again.sandboxId);
      assert.equal((await c().getSandbox(again.sandboxId)).endReason, 'killed');
      await assertOnlySandboxRuns();
    });
  }

  for (const [step, kept, clones] of FORK) {
    const what = `${kept ? 'kept' : 'undone'}, ${clones} clone(s) recorded dead`;
    it(`fork x2, kill -9 at "${step}": the source runs; its snapshot ${what}, none runs`, async () => {
      const forks = () =>
        main.rows<{ id: string }>(`SELECT id FROM snapshots WHERE kind = 'fork'`).map((r) => r.id);
      const sandboxes = () => main.rows<{ id: string }>('SELECT id FROM sandboxes').map((r) => r.id);
      const forksBefore = forks();
      const sandboxesBefore = sandboxes();
      const source = () =>
        main.rows<{ s: string }>('SELECT source_snapshot_id AS s FROM sandboxes WHERE id = ?', sbx);
      const sourceBefore = source();
      await main.dieAt(step, () => c().fork(sbx, { count: 2 }));
      const fork = forks().filter((x) => !forksBefore.includes(x));
      assert.equal(
        fork.length,
        kept ? 1 : 0,
        `the fork's snapshot is ${kept ? 'kept' : 'undone'}\n${main.diagnosis(sbx)}`,
      );
      // Kept, the source's disk stands on it; undone, the source is where it was.
      assert.deepEqual(source(), kept ? [{ s: fork[0] }] : sourceBefore);
      const news = sandboxes().filter((x) => !sandboxesBefore.includes(x));
      const recorded = news.flatMap((id) =>
        main.rows('SELECT state, end_reason AS r, source_snapshot_id AS s FROM sandboxes WHERE id = ?', id),
      );
      assert.deepEqual(
        recorded,
        Array.from({ length: clones }, () => ({ state: 'dead', r: 'failed to start', s: fork[0] })),
      );
      await assertOnlySandboxRuns();
      if (step === FORK.at(-1)?.[0]) {
        // The source still forks: a clone with its file.
        const r = await c().fork(sbx, { count: 1 });
        const clone = r.results[0];
        assert.ok(clone && 'sandbox' in clone, JSON.stringify(r.results));
        assert.equal(await cat(clone.sandbox.sandboxId), 'kept\n');
        await c().killSandbox(clone.sandbox.sandboxId);
        await assertOnlySandboxRuns();
      }
    });
  }

  for (const step of IMPORT) {
    const restores = step === IMPORT.at(-1);
    it(`import on a new host, kill -9 at "${step}": nothing of it left; it imports again${restores ? ' and restores' : ''}`, async () => {
      const { file, id } = await archive();
      const host = new CrashDaemon(await mkdtemp('/tmp/kiln-fp-host-'));
      try {
        await host.dieAt(step, () => host.c.importSnapshot(createReadStream(file)));
        assert.deepEqual(host.snapshotIds(), [], 'no snapshot record');
        assert.deepEqual(host.rows('SELECT name FROM templates'), [], 'no template record');
        assert.deepEqual(host.snapshotDirs(), [], 'no snapshot or staging directory');
        assert.equal(host.openOps(), 0, 'the import was undone');
        // Its id and name are free: the same archive imports.
        const snap = await host.c.importSnapshot(createReadStream(file));
        assert.equal(snap.snapshotId, id);
        assert.deepEqual(host.snapshotDirs(), [id]);
        if (restores) {
          const r = await host.c.restoreSnapshot(id);
          assert.equal(await cat(r.sandboxId, host), 'kept\n', 'the imported snapshot restores');
          await host.c.killSandbox(r.sandboxId);
        }
        assert.deepEqual(host.qemus(), []);
        host.stop();
      } finally {
        await host.cleanUp();
        await rm(host.state, { recursive: true, force: true });
      }
    });
  }

  it('the steps covered are exactly the steps each of the seven operations journals', async () => {
    const { file } = await archive();
    main.start();
    const victim = (await c().createSandbox({ template: 'base' })).sandboxId;
    await c().killSandbox(victim);
    assert.equal((await c().getSandbox(sbx)).state, 'running', main.diagnosis(sbx));
    await c().pause(sbx);
    await resume();
    await c().snapshot(sbx, { name: 'probe' });
    const fork = await c().fork(sbx, { count: 1 });
    for (const r of fork.results) if ('sandbox' in r) await c().killSandbox(r.sandbox.sandboxId);
    const steps = (kind: string, d = main) => d.journalled(kind);
    assert.deepEqual(steps('create'), CREATE);
    assert.deepEqual(steps('kill'), KILL);
    assert.deepEqual(
      steps('snapshot'),
      SNAPSHOT.map(([s]) => s),
    );
    assert.deepEqual(
      steps('pause'),
      PAUSE.map(([s]) => s).filter((s) => s.startsWith('pause:')),
    );
    assert.deepEqual(steps('resume'), RESUME);
    // A fork's steps: its own, then its clones' creates (the same request).
    const clones = main.rows<{ steps: string }>(
      `SELECT steps FROM operations WHERE kind = 'create' AND request_id =
         (SELECT request_id FROM operations WHERE kind = 'fork' ORDER BY started_at DESC LIMIT 1)`,
    );
    assert.equal(clones.length, 1);
    const cloneSteps = (JSON.parse(clones[0]?.steps ?? '[]') as { name: string }[]).map(
      (s) => `create:${s.name}`,
    );
    assert.deepEqual(
      [...steps('fork'), ...cloneSteps],
      FORK.map(([s]) => s),
    );
    main.stop();
    // An import on a host without its template journals every import step.
    const host = new CrashDaemon(await mkdtemp('/tmp/kiln-fp-host-'));
    try {
      host.start();
      await host.c.importSnapshot(createReadStream(file));
      assert.deepEqual(steps('import', host), IMPORT);
      host.stop();
    } finally {
      await host.cleanUp();
      await rm(host.state, { recursive: true, force: true });
    }
  });
});
