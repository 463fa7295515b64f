/** Archive import over the fake driver: what the service refuses to import. */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { LEGACY_MACHINE, MACHINE_REVISION } from '../../vmm/driver.ts';
import { packArchive } from '../snapshot-archive.ts';
import { NOW, ServiceFixture, stageArchive } from '../testing/fixtures.ts';

describe('SandboxService: archive import (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  it('import refuses a disk that is not one standalone layer (a backing file would read host files)', async () => {
    const src = join(fx.dir, 'evil');
    await mkdir(src);
    // The driver decides what a standalone layer is (QEMU: vmm/qemu/disk-layers.test.ts); the fake's names its base.
    await stageArchive(src, { id: 'snap-evil', createdAt: new Date(fx.now).toISOString() }, (kind) =>
      kind === 'disk' ? 'fake layer over /etc/passwd\n' : kind,
    );
    await assert.rejects(fx.svc.importSnapshot(packArchive(src)), {
      code: 'invalid_argument',
      message: /must be a standalone disk layer; it sits on \/etc\/passwd/,
    });
    assert.deepEqual(
      fx.store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.deepEqual(fx.store.openOperations(), []);
    assert.deepEqual(
      (await readdir(join(fx.dir, 'snapshots'))).filter((f) => f.startsWith('.staging')),
      [],
    );
  });

  it('a snapshot restores on the machine it was saved from: an older archive is legacy, and so are snapshots of its sandboxes', async () => {
    // The fake driver refuses state saved from another machine revision, as QEMU does.
    const stage = async (id: string, machine?: number): Promise<Readable> => {
      const src = join(fx.dir, id);
      await mkdir(src);
      await stageArchive(
        src,
        {
          id,
          guestToken: 't'.repeat(32),
          createdAt: new Date(fx.now).toISOString(),
          ...(machine === undefined ? {} : { machine }),
        },
        (kind) => (kind === 'state' ? JSON.stringify({ fake: true, id, machine: machine ?? 1 }) : kind),
      );
      return packArchive(src);
    };
    await assert.rejects(fx.svc.importSnapshot(await stage('snap-newer', MACHINE_REVISION + 1)), {
      code: 'invalid_argument',
      message: new RegExp(`revision ${MACHINE_REVISION + 1} is newer than this kiln's ${MACHINE_REVISION}`),
    });
    await assert.rejects(fx.svc.importSnapshot(await stage('snap-zero', 0)), {
      code: 'invalid_argument',
      message: new RegExp(`must be a machine revision from 1 to ${MACHINE_REVISION}, got 0`),
    });
    // An archive of a kilnd from before machine revisions names none: its machine is the legacy one.
    const old = await fx.svc.importSnapshot(await stage('snap-old'));
    assert.equal(old.machine, LEGACY_MACHINE);
    const s = await fx.svc.restore('snap-old');
    const snap = await fx.svc.snapshot(s.id);
    assert.equal(snap.machine, LEGACY_MACHINE, 'a snapshot records the machine its VM runs as');
    assert.equal((await fx.svc.restore(snap.id)).state, 'running');
    // A template built now is of the newest machine, and so are its sandboxes' pauses.
    const fresh = await fx.svc.create({ template: 'base' });
    await fx.svc.pause(fresh.id);
    const pause = fx.store.getSnapshot(fx.svc.get(fresh.id).sourceSnapshotId ?? '');
    assert.equal(
      fx.store.getSnapshot(fx.store.getTemplate('base').snapshotId ?? '').machine,
      MACHINE_REVISION,
    );
    assert.equal(pause.machine, MACHINE_REVISION);
    assert.equal((await fx.svc.resume(fresh.id)).state, 'running');
  });
});
