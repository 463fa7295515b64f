/** Snapshots, pause and resume over the fake driver: auto-pause, refusals, undo, failpoints. */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FakeDriver } from '../../vmm/fake-driver.ts';
import { SandboxService } from '../sandbox-service.ts';
import { NOW, ServiceFixture } from '../testing/fixtures.ts';

describe('SandboxService: snapshots, pause and resume (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  it('autoPause: the reaper pauses instead of killing; a paused sandbox stays until resumed', async () => {
    const s = await fx.svc.create({ template: 'base', timeoutS: 60, autoPause: true });
    fx.now += 61_000;
    assert.deepEqual(await fx.svc.reapExpired(), [s.id]);
    const paused = fx.svc.get(s.id);
    assert.equal(paused.state, 'paused');
    assert.equal(fx.store.getSnapshot(paused.sourceSnapshotId ?? '').kind, 'pause');
    assert.deepEqual(await fx.driver.list(), [], 'no VM while paused');
    fx.now += 3600_000;
    assert.deepEqual(await fx.svc.reapExpired(), [], 'paused sandboxes are not reaped');
    assert.deepEqual(await fx.svc.checkLiveness(), [], 'nor taken for dead');
    const r = await fx.svc.resume(s.id, { timeoutS: 30 });
    assert.equal(r.state, 'running');
    assert.equal(r.endAt, new Date(fx.now + 30_000).toISOString());
    assert.equal(fx.guests.inits.at(-1)?.body.accessToken, s.accessToken, 'same token after resume');
    await fx.svc.kill(s.id);
    assert.deepEqual(
      fx.store.listSnapshots().map((x) => x.kind),
      ['template'],
      'the pause snapshot went with its sandbox',
    );
  });

  it('refuses snapshot, pause, resume and fork in the wrong state, changing nothing', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const dead = await fx.svc.create({ template: 'base' });
    await fx.svc.kill(dead.id);
    const code = async (p: Promise<unknown>, c: string, re: RegExp): Promise<void> => {
      await assert.rejects(p, (e: unknown) => {
        assert.equal((e as { code?: string }).code, c);
        assert.match((e as Error).message, re);
        return true;
      });
    };
    await code(fx.svc.snapshot(dead.id), 'invalid_state', /is dead; a snapshot needs running/);
    await code(fx.svc.pause(dead.id), 'invalid_state', /is dead; pausing needs running/);
    await code(fx.svc.resume(s.id), 'invalid_state', /is running; resume needs paused/);
    await code(fx.svc.fork('sbx-nope', { count: 2 }), 'not_found', /sbx-nope/);
    await code(fx.svc.fork(s.id, { count: 33 }), 'invalid_argument', /count/);
    await code(fx.svc.snapshot(s.id, { name: 'base' }), 'already_exists', /template's name/);
    await code(fx.svc.restore('snap-nope'), 'not_found', /snap-nope/);
    await code(
      fx.svc.deleteSnapshot(fx.store.getTemplate('base').snapshotId ?? ''),
      'invalid_state',
      /template "base"/,
    );
    await fx.svc.pause(s.id);
    const pauseSnap = fx.svc.get(s.id).sourceSnapshotId ?? '';
    await code(fx.svc.restore(pauseSnap), 'invalid_state', /resume that sandbox instead/);
    await code(fx.svc.create({ template: pauseSnap }), 'not_found', /does not exist/);
    assert.deepEqual(
      fx.store
        .listSnapshots()
        .map((x) => x.kind)
        .sort(),
      ['pause', 'template'],
    );
    assert.deepEqual(fx.store.openOperations(), []);
  });

  it('a snapshot that fails before its disk froze is undone: no files, source running', async () => {
    const s = await fx.svc.create({ template: 'base' });
    class FreezeFails extends FakeDriver {
      override freezeDisk(): Promise<void> {
        return Promise.reject(new Error('disk said no'));
      }
    }
    const broken = fx.restarted({ driver: new FreezeFails(fx.world) });
    await assert.rejects(broken.snapshot(s.id), /disk said no/);
    assert.equal((await fx.driver.status(s.id)).state, 'running', 'the source runs again');
    assert.equal(fx.svc.get(s.id).state, 'running');
    assert.deepEqual(
      fx.store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.deepEqual(fx.store.openOperations(), []);
    const r = await fx.svc.reconcile();
    assert.deepEqual(r.orphanSnapshotDirs, [], 'nothing was left on disk');
  });

  it('journals a pause as snapshot dir, source paused, vm stopped, each reaching the failpoint', async () => {
    const hits: string[] = [];
    const s = await fx.svc.create({ template: 'base' });
    const traced = new SandboxService({
      ...fx.deps,
      failpoint: (kind, step) => hits.push(`${kind}:${step}`),
    });
    await traced.pause(s.id);
    await traced.resume(s.id);
    assert.deepEqual(hits, ['pause:snapshot dir', 'pause:source paused', 'pause:vm stopped', 'resume:vm']);
  });
});
