/** Archive import over the fake driver: what the service refuses to import. */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
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
});
