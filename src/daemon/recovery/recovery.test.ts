/**
 * Start-up recovery over the fake driver: reconcile adopts, unwinds and kills; snapshots and
 * pauses interrupted past their point of no return are finished.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmSpec } from '../../vmm/driver.ts';
import { FakeDriver } from '../../vmm/fake-driver.ts';
import { DiesInStop, FAKE_IMAGE, NOW, ServiceFixture } from '../testing/fixtures.ts';

/** A VM of the fake image, started behind the service's back. */
const vmSpec = (id: string): VmSpec => ({
  id,
  boot: { kernel: FAKE_IMAGE.kernel, initrd: FAKE_IMAGE.initrd, rootfs: FAKE_IMAGE.rootfs },
  resources: { memoryMiB: 512, vcpus: 1 },
  network: { kind: 'restricted' },
});

describe('SandboxService: start-up recovery (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  it('reconcile after a crash: adopts live sandboxes, unwinds interrupted ops, kills orphans', async () => {
    const live = await fx.svc.create({ template: 'base' });
    const lost = await fx.svc.create({ template: 'base' });
    await fx.driver.kill(lost.id); // its VM vanished while the daemon was down
    // An interrupted create: record + VM made, never finished.
    const tpl = fx.store.getTemplate('base');
    fx.store.insertSandbox({
      ...fx.svc.get(live.id),
      id: 'sbx-half',
      state: 'creating',
      sourceSnapshotId: tpl.snapshotId,
    });
    fx.store.beginOperation({
      id: 'op-half',
      kind: 'create',
      subject: 'sbx-half',
      requestId: 'req-x',
      startedAt: new Date(fx.now).toISOString(),
    });
    fx.store.addStep('op-half', {
      name: 'sandbox record',
      undo: { action: 'delete-sandbox', sandboxId: 'sbx-half' },
      at: new Date(fx.now).toISOString(),
    });
    fx.store.addStep('op-half', {
      name: 'vm',
      undo: { action: 'kill-vm', vmId: 'sbx-half' },
      at: new Date(fx.now).toISOString(),
    });
    await fx.driver.start(vmSpec('sbx-half'));
    await fx.driver.start(vmSpec('stray'));
    await mkdir(join(fx.dir, 'snapshots', '.staging-op-dead'), { recursive: true });

    const restarted = fx.restarted();
    const r = await restarted.reconcile();
    assert.deepEqual(r.adopted, [live.id]);
    assert.deepEqual(r.unwound, ['op-half']);
    assert.deepEqual(r.dead.sort(), [lost.id].sort());
    assert.deepEqual(r.orphans, ['stray']);
    assert.equal(restarted.get('sbx-half').state, 'dead');
    assert.equal(restarted.get(lost.id).endReason, 'lost in a daemon restart');
    assert.deepEqual(await fx.driver.list(), [live.id]);
    assert.deepEqual(fx.store.openOperations(), []);
    assert.equal(existsSync(join(fx.dir, 'snapshots', '.staging-op-dead')), false);
  });

  it('a snapshot interrupted after its disk froze is finished at start-up', async () => {
    const s = await fx.svc.create({ template: 'base' });
    class CrashAfterFreeze extends FakeDriver {
      override resume(): Promise<void> {
        return Promise.reject(new Error('daemon killed here'));
      }
    }
    const dying = fx.restarted({ driver: new CrashAfterFreeze(fx.world) });
    await assert.rejects(dying.snapshot(s.id, { name: 'late' }), /daemon killed here/);
    assert.equal(fx.store.openOperations().length, 1, 'past the point of no return the op stays open');
    const restarted = fx.restarted();
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    const snap = restarted.getSnapshot('late');
    assert.equal(snap.sandboxId, s.id);
    assert.equal(restarted.get(s.id).sourceSnapshotId, snap.id);
    assert.equal((await fx.driver.status(s.id)).state, 'running');
    assert.deepEqual(r.adopted, [s.id]);
    assert.deepEqual(fx.store.openOperations(), []);
    // Restorable like any other.
    const clone = await restarted.restore('late');
    assert.equal(clone.state, 'running');
  });

  it('a crash in the middle of freezing the disk: start-up finishes the freeze and the snapshot', async () => {
    const s = await fx.svc.create({ template: 'base' });
    class DiesInFreeze extends FakeDriver {
      override freezeDisk(): Promise<void> {
        return new Promise(() => undefined); // the daemon is killed here
      }
    }
    const dying = fx.restarted({ driver: new DiesInFreeze(fx.world) });
    void dying.snapshot(s.id, { name: 'mid' }).catch(() => undefined);
    for (
      let i = 0;
      i < 200 && !fx.store.openOperations()[0]?.steps.some((st) => st.name === 'disk frozen');
      i++
    )
      await new Promise((r) => setTimeout(r, 5));
    assert.equal((await fx.driver.status(s.id)).state, 'paused', 'the source is paused mid-snapshot');
    const restarted = fx.restarted();
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    assert.deepEqual(r.stuck, []);
    assert.equal((await fx.driver.status(s.id)).state, 'running', 'the source runs again');
    assert.equal(restarted.get(s.id).sourceSnapshotId, restarted.getSnapshot('mid').id);
    assert.deepEqual(r.orphanSnapshotDirs, []);
    assert.deepEqual(fx.store.openOperations(), []);
  });

  it('a crash after a pause kept the disk but before the VM directory went: start-up removes it, resume works', async () => {
    const s = await fx.svc.create({ template: 'base' });
    await fx.svc.exec(s.id, 'true');
    const dying = fx.restarted({ driver: new DiesInStop(fx.world) });
    void dying.pause(s.id).catch(() => undefined);
    for (let i = 0; i < 200 && fx.world.get(s.id)?.info.state !== 'stopped'; i++)
      await new Promise((r) => setTimeout(r, 5));
    assert.equal(fx.world.get(s.id)?.info.state, 'stopped', 'the pause got as far as the kept layer');
    const restarted = fx.restarted();
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    assert.equal(restarted.get(s.id).state, 'paused');
    assert.deepEqual(await fx.driver.list(), [], 'no VM left behind for the paused sandbox');
    const back = await restarted.resume(s.id);
    assert.equal(back.state, 'running');
  });

  it('start-up removes a stale VM of a paused sandbox even when no pause was in progress', async () => {
    const s = await fx.svc.create({ template: 'base' });
    await fx.svc.pause(s.id);
    // A leftover of an earlier crash: a dead VM under the paused sandbox's id.
    await fx.driver.start(vmSpec(s.id));
    fx.driver.crash(s.id);
    const r = await fx.restarted().reconcile();
    assert.deepEqual(r.adopted, [s.id]);
    assert.deepEqual(await fx.driver.list(), []);
    assert.equal((await fx.svc.resume(s.id)).state, 'running');
  });
});
