/**
 * Chain flattening against a sandbox's own operations (fake driver): a flatten of the chain a
 * paused sandbox stands on waits for that sandbox's resume in progress, and a resume asked for
 * during a flatten boots on the flattened chain once it is done.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MAX_DISK_CHAIN } from './types.ts';
import { NOW, ServiceFixture } from '../testing/fixtures.ts';

/** A promise and the function that settles it. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

describe('flattenChains and the sandboxes standing on a chain (fake driver)', () => {
  let fx: ServiceFixture;
  let id = '';
  /** The snapshots between the sandbox's layer and the template's, both included. */
  const chainLength = (): number => {
    let n = 0;
    for (let s = fx.store.getSandbox(id).sourceSnapshotId; s; s = fx.store.getSnapshot(s).parentId) n++;
    return n;
  };

  beforeEach(async () => {
    fx = await ServiceFixture.start({ now: NOW, base: true });
    id = (await fx.svc.create({ template: 'base' })).id;
    while (chainLength() <= MAX_DISK_CHAIN) {
      await fx.svc.pause(id, {}, { memory: false });
      await fx.svc.resume(id, { timeoutS: 60 });
    }
    await fx.svc.pause(id, {}, { memory: false });
  });
  afterEach(() => fx.close());

  it('waits for a resume in progress of a sandbox standing on the chain', async () => {
    const booting = gate();
    const held = gate();
    const events: string[] = [];
    const start = fx.driver.start.bind(fx.driver);
    fx.driver.start = async (spec, o) => {
      booting.open();
      await held.opened;
      events.push('boot');
      return start(spec, o);
    };
    const flatten = fx.driver.disks.flatten.bind(fx.driver.disks);
    fx.driver.disks.flatten = async (...args) => {
      events.push('flatten');
      return flatten(...args);
    };
    const resumed = fx.svc.resume(id, { timeoutS: 60 });
    await booting.opened;
    const flattened = fx.svc.flattenChains();
    await new Promise((r) => setTimeout(r, 50));
    held.open();
    assert.equal((await resumed).state, 'running');
    assert.deepEqual(await flattened, [fx.store.getSandbox(id).sourceSnapshotId]);
    assert.deepEqual(events, ['boot', 'flatten'], 'not while the resume was booting on the chain');
    assert.equal(chainLength(), 2, 'one layer over the template');
  });

  it('a resume asked for during a flatten waits for it and boots on the flattened chain', async () => {
    const inFlatten = gate();
    const held = gate();
    const events: string[] = [];
    const flatten = fx.driver.disks.flatten.bind(fx.driver.disks);
    fx.driver.disks.flatten = async (...args) => {
      inFlatten.open();
      await held.opened;
      await flatten(...args);
      events.push('flattened');
    };
    const start = fx.driver.start.bind(fx.driver);
    fx.driver.start = async (spec, o) => {
      events.push('boot');
      return start(spec, o);
    };
    const flattened = fx.svc.flattenChains();
    await inFlatten.opened;
    const resumed = fx.svc.resume(id, { timeoutS: 60 });
    await new Promise((r) => setTimeout(r, 50));
    held.open();
    assert.equal((await flattened).length, 1);
    assert.equal((await resumed).state, 'running');
    assert.deepEqual(events, ['flattened', 'boot'], 'the resume waited for the flatten');
    assert.equal(chainLength(), 2);
  });
});
