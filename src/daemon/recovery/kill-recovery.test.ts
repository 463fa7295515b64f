/**
 * A kill interrupted by a crash at each of its journalled steps is finished at start-up: the
 * sandbox dead with the reason its kill recorded, its VM gone (fake driver; the same crashes on
 * real guests are in test/integration/failpoints.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { nullLogger } from '../../core/log.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { FakeDriver, type FakeWorld } from '../../vmm/fake-driver.ts';
import type { GuestClient } from '../guest-client.ts';
import { SandboxService, type SandboxServiceDeps } from '../sandbox-service.ts';
import { KILL_STEPS } from '../sandbox/kill.ts';

const IMAGE = { key: 'img-1', kernel: '/img/vmlinuz', initrd: '/img/initrd.img', rootfs: '/img/rootfs.ext4' };
const guest = (): GuestClient => ({
  health: () => Promise.resolve(),
  init: () => Promise.resolve({ entropy: 'reseeded' }),
  exec: () => Promise.reject(new Error('not used')),
  upload: () => Promise.reject(new Error('not used')),
  writeStdin: () => Promise.reject(new Error('not used')),
  metrics: () => Promise.reject(new Error('not used')),
});

/** A state dir with template `base` on the fake driver. */
async function setUp(): Promise<{
  dir: string;
  store: SqliteStore;
  world: FakeWorld;
  deps: SandboxServiceDeps;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-killrec-'));
  const store = new SqliteStore(join(dir, 'state.db'));
  const world: FakeWorld = new Map();
  const deps = {
    store,
    driver: new FakeDriver(world),
    guest,
    image: () => Promise.resolve(IMAGE),
    dataDir: dir,
    log: nullLogger,
  };
  await new SandboxService(deps).buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
  return { dir, store, world, deps };
}

describe('recovery of an interrupted kill (fake driver)', () => {
  let t: Awaited<ReturnType<typeof setUp>>;
  beforeEach(async () => {
    t = await setUp();
  });
  afterEach(async () => {
    t.store.close();
    await rm(t.dir, { recursive: true, force: true });
  });

  for (const [i, step] of KILL_STEPS.entries()) {
    it(`a crash at "kill:${step}": dead with the kill's reason, no VM, the kill finished`, async () => {
      const { store, world, deps } = t;
      const svc = new SandboxService(deps);
      const s = await svc.create({ template: 'base' });
      // What a kill by the reaper leaves when kilnd dies right after `step` is journalled.
      store.updateSandbox(s.id, { state: 'killing', endReason: 'timeout' });
      store.beginOperation({ id: 'op-k', kind: 'kill', subject: s.id, requestId: null, startedAt: '' });
      for (const name of KILL_STEPS.slice(0, i + 1))
        store.addStep('op-k', { name, undo: { action: 'none' }, at: '' });
      if (step === 'vm killed') await deps.driver.kill(s.id);

      const r = await new SandboxService({ ...deps, driver: new FakeDriver(world) }).reconcile();
      assert.deepEqual(r.finished, ['op-k']);
      assert.deepEqual(r.unwound, []);
      const after = store.getSandbox(s.id);
      assert.equal(after.state, 'dead');
      assert.equal(after.endReason, 'timeout', 'the reason the kill recorded, not a default');
      assert.deepEqual(await deps.driver.list(), []);
      assert.equal(store.getOperation('op-k').state, 'done');
      assert.deepEqual(store.openOperations(), []);
    });
  }

  it('a kill that failed (its op undone) and a restart: the killing sandbox ends with its reason', async () => {
    const { store, world, deps } = t;
    const svc = new SandboxService(deps);
    const s = await svc.create({ template: 'base' });
    store.updateSandbox(s.id, { state: 'killing', endReason: 'timeout' });
    const r = await new SandboxService({ ...deps, driver: new FakeDriver(world) }).reconcile();
    assert.deepEqual(r.dead, [s.id]);
    assert.equal(store.getSandbox(s.id).endReason, 'timeout');
    assert.deepEqual(await deps.driver.list(), []);
  });
});
