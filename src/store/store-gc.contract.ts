/**
 * The behaviour every `Store` must show, part three: template garbage collection's records
 * (when snapshots were last used) and `dropUnused`, which removes an unused hidden template or
 * snapshot atomically and refuses while anything depends on it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { code, sandbox, snapshot, T0, T1, template, type StoreFixture } from './store.contract.ts';
import type { Store } from './store.ts';

/** A hidden image template `tpl-img` on `snap-img`, a layer `snap-l1` over it, and `base` (tpl-1, snap-1). */
function world(s: Store): void {
  s.insertSnapshot(snapshot());
  s.putTemplate(template({ snapshotId: 'snap-1' }));
  s.insertSnapshot(snapshot({ id: 'snap-img', templateId: 'tpl-img' }));
  s.putTemplate(template({ id: 'tpl-img', name: 'kiln-img-abc', snapshotId: 'snap-img' }));
  s.insertSnapshot(
    snapshot({
      id: 'snap-l1',
      kind: 'snapshot',
      name: 'kiln-layer-1',
      templateId: 'tpl-img',
      parentId: 'snap-img',
    }),
  );
}

export function storeGcContract(name: string, fx: StoreFixture): void {
  describe(`Store contract (template garbage collection): ${name}`, () => {
    it('snapshot uses: the latest use is kept, unknown ids are skipped, they go with their snapshot', () => {
      const s = fx.open();
      world(s);
      s.touchSnapshots(['snap-l1', 'snap-nope'], T1);
      s.touchSnapshots(['snap-l1', 'snap-img'], T0);
      assert.deepEqual([...s.snapshotUses()].sort(), [
        ['snap-img', T0],
        ['snap-l1', T1],
      ]);
      s.deleteSnapshot('snap-l1');
      assert.deepEqual([...s.snapshotUses().keys()], ['snap-img']);
      s.close();
    });

    it('dropUnused refuses while a layer, sandbox or warm pool member stands on the snapshot', () => {
      const s = fx.open();
      world(s);
      const img = { templateId: 'tpl-img', snapshotId: 'snap-img', tombstone: null };
      assert.equal(
        code(() => s.dropUnused(img)),
        'invalid_state',
        'a layer is on it',
      );
      s.insertSandbox(sandbox({ id: 'sbx-b', templateId: 'tpl-img', sourceSnapshotId: 'snap-l1' }));
      const layer = { templateId: null, snapshotId: 'snap-l1', tombstone: null };
      assert.equal(
        code(() => s.dropUnused(layer)),
        'invalid_state',
        'a sandbox is on it',
      );
      s.updateSandbox('sbx-b', { state: 'dead' });
      s.insertPoolVm({
        id: 'pool-1',
        templateId: 'tpl-img',
        snapshotId: 'snap-l1',
        memoryMiB: 512,
        state: 'ready',
        createdAt: T0,
      });
      assert.equal(
        code(() => s.dropUnused(layer)),
        'invalid_state',
        'a warm pool member is on it',
      );
      s.deletePoolVm('pool-1');
      assert.deepEqual(s.dropUnused(layer), { tombstoned: false });
      assert.equal(
        code(() => s.getSnapshot('snap-l1')),
        'not_found',
      );
      assert.equal(s.getSandbox('sbx-b').sourceSnapshotId, null, 'a dead sandbox no longer names it');
      s.close();
    });

    it('dropUnused refuses a snapshot a template points at, and a template whose snapshot changed', () => {
      const s = fx.open();
      world(s);
      assert.equal(
        code(() => s.dropUnused({ templateId: null, snapshotId: 'snap-1', tombstone: null })),
        'invalid_state',
      );
      assert.equal(
        code(() => s.dropUnused({ templateId: 'tpl-img', snapshotId: 'snap-l1', tombstone: null })),
        'invalid_state',
      );
      assert.equal(s.getTemplate('tpl-img').snapshotId, 'snap-img', 'nothing changed');
      s.close();
    });

    it('dropUnused removes a template with its snapshot, or keeps it as a tombstone sandbox records name', () => {
      const s = fx.open();
      world(s);
      s.deleteSnapshot('snap-l1');
      s.insertSandbox(sandbox({ id: 'sbx-old', templateId: 'tpl-img', state: 'dead' }));
      s.setPoolSize('tpl-img', 2);
      const img = { templateId: 'tpl-img', snapshotId: 'snap-img', tombstone: null };
      assert.equal(
        code(() => s.dropUnused(img)),
        'invalid_state',
        'named by a dead sandbox and no tombstone name given',
      );
      assert.deepEqual(s.dropUnused({ ...img, tombstone: 'kiln-deleted-tpl-img' }), { tombstoned: true });
      const t = s.getTemplate('tpl-img');
      assert.equal(t.name, 'kiln-deleted-tpl-img');
      assert.equal(t.snapshotId, null);
      assert.equal(s.poolSizes().has('tpl-img'), false);
      assert.equal(
        code(() => s.getSnapshot('snap-img')),
        'not_found',
      );
      s.deleteSandbox('sbx-old');
      assert.deepEqual(s.dropUnused({ templateId: 'tpl-img', snapshotId: null, tombstone: null }), {
        tombstoned: false,
      });
      assert.equal(
        code(() => s.getTemplate('tpl-img')),
        'not_found',
      );
      assert.equal(s.getTemplate('tpl-1').snapshotId, 'snap-1', 'base untouched');
      s.close();
    });
  });
}
