/**
 * The collector's decision on made-up records: candidates, the build chains of visible
 * templates (also after a flatten re-parented the template's snapshot), children that keep their
 * parents, leaves first, builds in progress, grace, tombstones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { build as aBuild, snapshot, template } from '../../store/store.contract.ts';
import type { SnapshotRecord, TemplateBuildRecord } from '../../core/domain.ts';
import { planCollection, type GcWorld } from './gc-plan.ts';

const T = Date.parse('2026-06-10T00:00:00Z');
const OLD = '2026-06-01T00:00:00.000Z';
const layer = (id: string, parentId: string, o: Partial<SnapshotRecord> = {}) =>
  snapshot({ id, kind: 'snapshot', name: `kiln-layer-${id}`, parentId, createdAt: OLD, ...o });
const build = (o: Partial<TemplateBuildRecord>): TemplateBuildRecord =>
  aBuild({ templateId: 'tpl-app', status: 'ready', createdAt: OLD, updatedAt: OLD, finishedAt: OLD, ...o });

/**
 * `kiln-img-x` (tpl-img, snap-img) <- l1 <- l2 <- tpl-app's running state (snap-app, whose
 * current build made l1, l2), and l1 <- l3 <- l4 (an older build's), `base` (tpl-1, snap-1).
 */
function world(o: Partial<GcWorld> = {}): GcWorld {
  const snapshots = [
    snapshot({ id: 'snap-1', createdAt: OLD }),
    snapshot({ id: 'snap-img', templateId: 'tpl-img', createdAt: OLD }),
    layer('l1', 'snap-img'),
    layer('l2', 'l1'),
    layer('l3', 'l1'),
    layer('l4', 'l3'),
    layer('snap-app', 'l2', { name: 'kiln-tpl-app' }),
  ];
  const children = (id: string) => snapshots.filter((s) => s.parentId === id).map((s) => s.id);
  return {
    templates: [
      template({ snapshotId: 'snap-1' }),
      template({ id: 'tpl-img', name: 'kiln-img-x', snapshotId: 'snap-img' }),
      template({ id: 'tpl-app', name: 'app', snapshotId: 'snap-app' }),
    ],
    snapshots,
    builds: [build({ layers: ['l1', 'l2'], snapshotId: 'snap-app' })],
    uses: new Map(),
    dependents: (id) => ({ snapshots: children(id), sandboxes: [] }),
    named: () => false,
    held: () => false,
    resolving: false,
    now: T,
    graceMs: 0,
    ...o,
  };
}
const removed = (w: GcWorld) => planCollection(w).remove.map((u) => u.snapshotId ?? u.templateId);
const why = (w: GcWorld, id: string) =>
  planCollection(w).kept.find((k) => k.snapshotId === id || k.templateId === id)?.reason;

describe('template garbage collection: the decision', () => {
  it('only layers outside the chain go, leaves first; the chain and the image template under it stay', () => {
    const w = world();
    assert.deepEqual(removed(w), ['l4', 'l3']);
    for (const id of ['l1', 'l2', 'tpl-img'])
      assert.equal(why(w, id), 'in the build chain of template "app"');
    for (const id of ['snap-1', 'snap-app'])
      assert.equal(why(w, id), undefined, "a visible template's own snapshot is no candidate");
  });

  it('after a flatten re-parented the running state onto the image, the current build keeps its layers', () => {
    const w = world();
    const flat = w.snapshots.map((s) => (s.id === 'snap-app' ? { ...s, parentId: 'snap-img' } : s));
    const children = (id: string) => flat.filter((s) => s.parentId === id).map((s) => s.id);
    const f = world({ snapshots: flat, dependents: (id) => ({ snapshots: children(id), sandboxes: [] }) });
    assert.deepEqual(removed(f), ['l4', 'l3']);
    assert.equal(why(f, 'l2'), 'in the build chain of template "app"');
  });

  it('once the template is gone, everything goes, each layer before what it sits on', () => {
    const w = world();
    const gone = world({ templates: w.templates.filter((t) => t.id !== 'tpl-app') });
    const order = removed(gone);
    assert.deepEqual([...order].sort(), ['l1', 'l2', 'l3', 'l4', 'snap-app', 'snap-img'].sort());
    const before = (a: string, b: string) => order.indexOf(a) < order.indexOf(b);
    for (const [child, parent] of [
      ['snap-app', 'l2'],
      ['l2', 'l1'],
      ['l4', 'l3'],
      ['l3', 'l1'],
      ['l1', 'snap-img'],
    ] as const)
      assert.ok(before(child, parent), `${child} before ${parent}`);
    assert.equal(planCollection(gone).remove.find((u) => u.snapshotId === 'snap-img')?.kind, 'template');
  });

  it('a layer a kept snapshot stands on stays; a sandbox, a build, a recent use or a resolving build keep things', () => {
    const w = world({ templates: world().templates.filter((t) => t.id !== 'tpl-app') });
    const recent = world({
      ...w,
      uses: new Map([['l4', new Date(T - 1000).toISOString()]]),
      graceMs: 3600_000,
    });
    assert.equal(why(recent, 'l4'), 'used 1 s ago (grace 3600 s)');
    assert.equal(why(recent, 'l3'), 'snapshot l4, which stays, is layered on it');
    assert.equal(why(recent, 'snap-img'), 'snapshot l1, which stays, is layered on it');
    assert.deepEqual(removed(recent), ['snap-app', 'l2']);

    const sbx = world({
      ...w,
      dependents: (id) => ({ ...w.dependents(id), sandboxes: id === 'l2' ? ['sbx-1'] : [] }),
    });
    assert.equal(why(sbx, 'l2'), 'in use by sbx-1');
    assert.deepEqual(planCollection(sbx).inUse, ['l2'], 'its use is recorded');

    const held = world({ ...w, held: (id) => id === 'l4' });
    assert.equal(why(held, 'l4'), 'held by a template build in progress');

    const resolving = world({ ...w, resolving: true });
    assert.equal(why(resolving, 'tpl-img'), 'a template build in progress is finding its parent');
    assert.ok(removed(resolving).includes('l4'), 'layers are not held by a resolving build');
  });

  it('a tombstone goes once no sandbox record names it; user snapshots and deleted ones are never candidates', () => {
    const base = world();
    const w = world({
      templates: [...base.templates, template({ id: 'tpl-del', name: 'kiln-deleted-tpl-del' })],
      snapshots: [
        ...base.snapshots,
        snapshot({ id: 'snap-user', kind: 'snapshot', name: 'mine', createdAt: OLD }),
        layer('l9', 'snap-1', { deletedAt: OLD }),
      ],
    });
    assert.deepEqual(removed(w), ['l4', 'l3', 'tpl-del']);
    assert.equal(why({ ...w, named: (id) => id === 'tpl-del' }, 'tpl-del'), 'sandbox records still name it');
  });
});
