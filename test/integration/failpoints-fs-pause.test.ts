/**
 * kill -9 of kilnd (failpoints) at every journalled step of a filesystem-only pause
 * (`pause({memory: false})`) and of its resume (a cold boot), then a restart without the
 * failpoint. One exact outcome per step, as for a memory pause (failpoints.test.ts): before the
 * point of no return (`vm stopped`) the pause is undone and the sandbox runs on, the same boot;
 * from it on the pause is finished: paused, kind `filesystem`, and its resume boots a new guest
 * that has the file. A crash in the resume leaves it paused (filesystem) and nothing of the new
 * boot: no VM directory, no QEMU, no network slot (checked by `dieAt`), no open operation, a
 * snapshot directory per record. The last test checks that the steps covered are exactly the
 * steps a filesystem-only pause and its resume journal.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import { CrashDaemon } from '../helpers/crash-daemon.ts';

/** A filesystem-only pause's journalled steps and the one correct state after a crash at each. */
const PAUSE: [step: string, after: 'running' | 'paused'][] = [
  ['pause:snapshot dir', 'running'],
  // The point of no return: the guest synced, the VM is stopped keeping its overlay at start-up.
  ['pause:vm stopped', 'paused'],
  // Inside that step: QEMU exited and its overlay is the layer; the VM directory is still there.
  ['qemu:overlay kept', 'paused'],
];
/** A crash in the resume of a filesystem-only pause (before its VM, or with its slot taken). */
const RESUME = ['resume:vm', 'resume:network'];
const BOOT_ID = 'cat /proc/sys/kernel/random/boot_id';

describe(
  'kill -9 in a filesystem-only pause and its resume (failpoints, real guests)',
  { timeout: 1_800_000 },
  () => {
    let main: CrashDaemon;
    let sbx = '';
    const c = () => main.c;
    /**
     * Resumes the long-lived sandbox for as long as it was created for: a resume's end time
     * restarts at its timeoutS (default 300 s, as E2B's), which a slow run outlasts (the reaper
     * then ended the sandbox before the last test).
     */
    const resume = () => c().resume(sbx, { timeoutS: 3600 });
    const pauseKind = (): string | null =>
      main.rows<{ pause_kind: string | null }>('SELECT pause_kind FROM sandboxes WHERE id = ?', sbx)[0]
        ?.pause_kind ?? null;
    /** The sandbox runs its one VM with its file; nothing else is left. */
    const assertOnlySandboxRuns = async (): Promise<void> => {
      const now = await c().getSandbox(sbx);
      assert.equal(now.state, 'running', main.diagnosis(sbx));
      // Far from its end: no later test may find it ended by the reaper.
      assert.ok(Date.parse(now.endAt) - Date.now() > 30 * 60_000, `it ends at ${now.endAt}`);
      assert.equal(pauseKind(), null);
      const f = await main.sh(sbx, 'cat /home/user/f 2>&1; echo "exit $?"; ls -la /home/user');
      assert.match(f, /^kept\nexit 0\n/, `the file is there\n${main.diagnosis(sbx)}`);
      assert.deepEqual(main.vmDirs(), [sbx], 'one VM directory: the sandbox');
      assert.equal(main.qemus().length, 1, 'one QEMU: the sandbox');
      assert.equal(main.openOps(), 0, 'no operation left open');
      assert.deepEqual(
        main.snapshotDirs(),
        main.snapshotIds(),
        'a directory per snapshot record, nothing else',
      );
    };
    /** Paused keeping its filesystem only, with no VM, no QEMU and no open operation. */
    const assertFsPaused = (): void => {
      assert.equal(pauseKind(), 'filesystem');
      assert.deepEqual(main.vmDirs(), [], 'a paused sandbox has no VM directory');
      assert.deepEqual(main.qemus(), [], 'and no QEMU');
      assert.equal(main.openOps(), 0, 'the operation was finished or undone');
      assert.deepEqual(
        main.snapshotDirs(),
        main.snapshotIds(),
        'a directory per snapshot record, nothing else',
      );
    };

    before(async () => {
      main = new CrashDaemon(await mkdtemp('/tmp/kiln-fpfs-'));
      main.start();
      await c().buildTemplate({ name: 'base' });
      sbx = (await c().createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
      await c().exec(sbx, 'echo kept > /home/user/f');
      main.stop();
    });
    afterEach(() => {
      main.stop();
    });
    after(async () => {
      await main.cleanUp();
      await rm(main.state, { recursive: true, force: true });
    });

    for (const [step, outcome] of PAUSE) {
      it(`filesystem-only pause, kill -9 at "${step}": the sandbox is ${outcome}, nothing leaked`, async () => {
        main.start();
        const boot = await main.sh(sbx, BOOT_ID);
        main.stop();
        await main.dieAt(step, () => c().pause(sbx, { memory: false }));
        assert.equal((await c().getSandbox(sbx)).state, outcome);
        if (outcome === 'running') {
          assert.equal(await main.sh(sbx, BOOT_ID), boot, 'undone: the same boot runs on');
        } else {
          assertFsPaused();
          await resume();
          assert.notEqual(await main.sh(sbx, BOOT_ID), boot, 'the resume booted the guest afresh');
        }
        await assertOnlySandboxRuns();
      });
    }

    for (const step of RESUME) {
      it(`resume of a filesystem-only pause, kill -9 at "${step}": paused again, then resumes with its file`, async () => {
        main.start();
        await c().pause(sbx, { memory: false });
        main.stop();
        await main.dieAt(step, () => resume());
        assert.equal((await c().getSandbox(sbx)).state, 'paused');
        assertFsPaused();
        await resume();
        await assertOnlySandboxRuns();
        await main.assertNetworks('after the resume');
      });
    }

    it('the steps covered are exactly the steps a filesystem-only pause and its resume journal', async () => {
      main.start();
      await c().pause(sbx, { memory: false });
      assert.deepEqual(
        main.journalled('pause'),
        PAUSE.map(([s]) => s).filter((s) => s.startsWith('pause:')),
      );
      await resume();
      assert.deepEqual(main.journalled('resume'), RESUME);
      await assertOnlySandboxRuns();
    });
  },
);
