/**
 * Deleting a snapshot over the fake driver: the user-facing snapshot goes at once, its disk layer
 * stays while a sandbox or another snapshot stands on it and is reclaimed when nothing does.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { KilnError } from '../../core/errors.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { FakeDriver } from '../../vmm/fake-driver.ts';
import { fakeDeps, fakeService } from '../../../test/helpers/fake-service.ts';
import { SandboxService, type SandboxServiceDeps } from '../sandbox-service.ts';

async function code(p: Promise<unknown>, want: string, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KilnError, String(e));
    assert.equal(e.code, want, e.message);
    if (msg) assert.match(e.message, msg);
    return true;
  });
}

describe('deleting a snapshot (fake driver)', () => {
  let dir: string;
  let store: SqliteStore;
  let driver: FakeDriver;
  let deps: SandboxServiceDeps;
  let svc: SandboxService;
  /** Whether the snapshot's record (deleted or not) and its directory are still there. */
  const layer = (id: string): { record: boolean; files: boolean } => {
    let record = true;
    try {
      store.getSnapshot(id);
    } catch {
      record = false;
    }
    return { record, files: existsSync(join(dir, 'snapshots', id)) };
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-delsnap-'));
    store = new SqliteStore(join(dir, 'state.db'));
    driver = new FakeDriver();
    deps = fakeDeps({ store, driver, dataDir: dir });
    svc = await fakeService(deps);
  });
  afterEach(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('while its source runs: gone for users at once, name free at once, layer kept until the source ends', async () => {
    const a = await svc.create({ template: 'base' });
    const snap = await svc.snapshot(a.id, { name: 'keep' });
    await svc.deleteSnapshot('keep');
    for (const ref of [snap.id, 'keep']) {
      assert.throws(() => svc.getSnapshot(ref), { code: 'not_found' });
      await code(svc.restore(ref), 'not_found');
      await code(svc.create({ template: ref }), 'not_found');
      await code(svc.exportSnapshot(ref, new PassThrough()), 'not_found');
      await code(svc.deleteSnapshot(ref), 'not_found');
    }
    assert.deepEqual(svc.listSnapshots({ kind: 'snapshot' }), []);
    // Another sandbox takes the name at once.
    const b = await svc.create({ template: 'base' });
    const again = await svc.snapshot(b.id, { name: 'keep' });
    assert.notEqual(again.id, snap.id);
    assert.equal(svc.getSnapshot('keep').id, again.id);
    // The source runs on over its overlay on the deleted snapshot's layer.
    assert.equal(svc.get(a.id).sourceSnapshotId, snap.id);
    assert.equal((await svc.exec(a.id, 'true')).exitCode, 0);
    assert.deepEqual(layer(snap.id), { record: true, files: true });
    assert.ok(store.getSnapshot(snap.id).deletedAt);
    await svc.kill(a.id);
    assert.deepEqual(layer(snap.id), { record: false, files: false });
    assert.deepEqual(layer(again.id), { record: true, files: true });
  });

  it('with a restored sandbox on it: that sandbox runs, pauses and resumes; the layer goes with it', async () => {
    const a = await svc.create({ template: 'base' });
    const snap = await svc.snapshot(a.id);
    const r = await svc.restore(snap.id);
    await svc.deleteSnapshot(snap.id);
    await svc.kill(a.id);
    assert.deepEqual(layer(snap.id), { record: true, files: true }, 'the restore still stands on it');
    await svc.pause(r.id);
    const paused = svc.get(r.id).sourceSnapshotId ?? '';
    assert.equal(store.getSnapshot(paused).parentId, snap.id);
    await code(svc.deleteSnapshot(paused), 'invalid_state', /still used by/);
    assert.equal((await svc.resume(r.id)).state, 'running');
    assert.equal((await svc.exec(r.id, 'true')).exitCode, 0);
    assert.deepEqual(layer(snap.id), { record: true, files: true });
    await svc.kill(r.id);
    assert.deepEqual(layer(snap.id), { record: false, files: false });
    assert.deepEqual(
      store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
  });

  it('unknown and already deleted snapshots are not found; a template snapshot is refused', async () => {
    await code(svc.deleteSnapshot('snap-nope'), 'not_found', /snap-nope/);
    const a = await svc.create({ template: 'base' });
    const snap = await svc.snapshot(a.id, { name: 'once' });
    await svc.kill(a.id);
    await svc.deleteSnapshot('once');
    assert.deepEqual(layer(snap.id), { record: false, files: false }, 'nothing stood on it: reclaimed now');
    await code(svc.deleteSnapshot(snap.id), 'not_found');
    await code(svc.deleteSnapshot('once'), 'not_found');
    await code(
      svc.deleteSnapshot(store.getTemplate('base').snapshotId ?? ''),
      'invalid_state',
      /template "base"/,
    );
  });

  it('a crash between hiding and reclaiming: start-up reclaims the free layer, keeps a used one', async () => {
    const a = await svc.create({ template: 'base' });
    const free = await svc.snapshot(a.id);
    await svc.kill(a.id);
    const b = await svc.create({ template: 'base' });
    const used = await svc.snapshot(b.id);
    // What a crash right after the hide leaves: records that say deleted, files still there.
    for (const x of [free, used]) store.hideSnapshot(x.id, new Date().toISOString());
    assert.deepEqual(layer(free.id), { record: true, files: true });
    const after = new SandboxService(deps);
    await after.reconcile();
    assert.deepEqual(layer(free.id), { record: false, files: false });
    assert.deepEqual(layer(used.id), { record: true, files: true }, 'its source stands on it');
    assert.deepEqual(after.listSnapshots({ kind: 'snapshot' }), []);
    await after.kill(b.id);
    assert.deepEqual(layer(used.id), { record: false, files: false });
  });
});
