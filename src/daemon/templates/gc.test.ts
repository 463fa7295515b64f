/**
 * Template garbage collection over the fake driver and fake guests (exec answers `ran <cmd>`,
 * exit 4 when the command says "fail"): what is kept (a visible template's build chain,
 * sandboxes, warm pool members, builds in progress, recent use) and what is removed, that a dry
 * run changes nothing, and that a removal cut by a crash at each journalled step is finished at
 * start-up. The real thing: test/integration/template-gc.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, it } from 'node:test';
import type { TemplateGcView } from '../../core/api-types.ts';
import { nullLogger } from '../../core/log.ts';
import { COLLECT_STEPS } from '../sandbox/collect.ts';
import { FAKE_IMAGE, NOW, ServiceFixture, blockingGuests } from '../testing/fixtures.ts';
import { TemplateBuildService } from './build-service.ts';

const DAY = 24 * 3600_000;
let f: ServiceFixture;
let tb: TemplateBuildService;

async function start(
  o: Parameters<typeof ServiceFixture.start>[0] = {},
  imageTemplate?: () => Promise<string>,
) {
  f = await ServiceFixture.start({ now: NOW, base: true, ...o });
  tb = new TemplateBuildService({
    svc: f.svc,
    store: f.store,
    dataDir: f.dir,
    log: nullLogger,
    now: () => f.now,
    ensureTemplate: () => Promise.resolve(),
    readyTimeoutMs: 1000,
    image: () => Promise.resolve(FAKE_IMAGE),
    ...(imageTemplate ? { imageTemplate } : {}),
  });
}

const run = (...cmds: string[]) => ({
  fromTemplate: 'base',
  steps: cmds.map((c) => ({ type: 'RUN', args: [c] })),
});

/** Starts a build of `name`; `done` resolves when it ended. */
function startBuild(name: string, body: Record<string, unknown>) {
  const b = tb.request(name, {}, undefined);
  tb.start(b.templateId, b.id, body, undefined);
  return b;
}
async function build(name: string, body: Record<string, unknown>) {
  const b = startBuild(name, body);
  await tb.idle();
  return f.store.getBuild(b.id);
}

const layers = () =>
  f.store.listSnapshots({ deleted: false }).filter((s) => s.name?.startsWith('kiln-layer-'));
const dir = (id: string) => join(f.dir, 'snapshots', id);
const gone = (id: string) => {
  assert.throws(() => f.store.getSnapshot(id), { code: 'not_found' });
  assert.equal(existsSync(dir(id)), false, `${id}'s directory is gone`);
};
const ids = (items: TemplateGcView['removed']) => items.map((x) => x.snapshotId ?? x.templateId);
const reasonOf = (r: TemplateGcView, id: string) =>
  r.kept.find((x) => x.snapshotId === id || x.templateId === id)?.reason ?? '(not kept)';
const collectOps = () => {
  const db = new DatabaseSync(join(f.dir, 'state.db'), { readOnly: true });
  try {
    return db.prepare(`SELECT subject, state, steps FROM operations WHERE kind = 'collect'`).all() as {
      subject: string;
      state: string;
      steps: string;
    }[];
  } finally {
    db.close();
  }
};

describe('template garbage collection (fake driver)', () => {
  afterEach(async () => {
    await tb.gc.stop();
    await f.close();
  });

  it("an earlier build's layers go once unused for the grace period, leaves first; the current chain stays; a dry run changes nothing", async () => {
    await start();
    const first = await build('app', run('echo one', 'echo two', 'echo three'));
    const second = await build('app', run('echo one', 'echo TWO', 'echo three'));
    const old = first.layers.filter((l) => !second.layers.includes(l));
    assert.equal(old.length, 2, 'steps two and three of the first build');
    assert.equal(layers().length, 5);

    let r = await tb.gc.collect();
    assert.deepEqual(r.removed, [], 'a day has not passed');
    for (const id of old) assert.match(reasonOf(r, id), /^used 0 s ago \(grace 86400 s\)$/);
    for (const id of second.layers) assert.match(reasonOf(r, id), /in the build chain of template "app"/);

    f.now += 2 * DAY;
    const before = { snaps: f.store.listSnapshots(), uses: f.store.snapshotUses() };
    r = await tb.gc.collect({ dryRun: true });
    assert.equal(r.dryRun, true);
    assert.deepEqual(ids(r.removed), [...old].reverse(), 'leaves first: step three, then step two');
    assert.ok(r.freedBytes > 0);
    assert.deepEqual(f.store.listSnapshots(), before.snaps, 'the dry run removed nothing');
    assert.deepEqual(f.store.snapshotUses(), before.uses, 'nor recorded a use');
    for (const id of old) assert.ok(existsSync(dir(id)));
    assert.deepEqual(collectOps(), []);

    r = await tb.gc.collect();
    assert.equal(r.dryRun, false);
    assert.deepEqual(ids(r.removed), [...old].reverse());
    for (const id of old) gone(id);
    assert.deepEqual(
      collectOps().map((o) => [o.state, (JSON.parse(o.steps) as { name: string }[]).map((s) => s.name)]),
      old.map(() => ['done', [...COLLECT_STEPS]]),
    );
    assert.deepEqual(f.store.openOperations(), []);
    for (const id of [...second.layers, second.snapshotId ?? '']) assert.ok(existsSync(dir(id)));
    const sbx = await f.svc.create({ template: 'app' });
    assert.equal(sbx.state, 'running', 'the template still works');
    const again = await build('app', run('echo one', 'echo TWO', 'echo three'));
    assert.deepEqual(again.layers, second.layers, 'its layers still serve as cache');
  });

  it('a layer a sandbox stands on stays, and after the sandbox ends stays for the grace period', async () => {
    await start();
    const bad = await build('bad', run('echo ok', 'fail here'));
    assert.equal(bad.status, 'error');
    const [l] = bad.layers;
    assert.ok(l);
    const sbx = await f.svc.create({ template: l });
    f.now += 2 * DAY;
    let r = await tb.gc.collect();
    assert.equal(reasonOf(r, l), `in use by ${sbx.id}`);
    await f.svc.kill(sbx.id);
    r = await tb.gc.collect();
    assert.match(reasonOf(r, l), /^used 0 s ago/, 'its use was recorded while the sandbox stood on it');
    assert.deepEqual(ids((await tb.gc.collect({ graceMs: 0 })).removed), [l], 'a grace of 0: at once');
    gone(l);
  });

  it('a hidden image template: kept by a warm pool member; then removed, leaving a tombstone dead sandbox records name', async () => {
    await start();
    const t = await f.svc.buildTemplate('kiln-img-test', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    const snap = t.snapshotId ?? '';
    f.svc.setWarmPoolSize(t.name, 1);
    await f.svc.refillWarmPool();
    const [member] = f.store.listPoolVms();
    assert.ok(member);
    let r = await tb.gc.collect({ graceMs: 0 });
    assert.equal(reasonOf(r, t.id), `in use by ${member.id}`);
    f.svc.setWarmPoolSize(t.name, 0);
    await f.svc.refillWarmPool();
    const sbx = await f.svc.create({ template: t.name });
    await f.svc.kill(sbx.id);

    r = await tb.gc.collect({ graceMs: 0 });
    assert.deepEqual(ids(r.removed), [snap]);
    assert.equal(r.removed[0]?.kind, 'template');
    gone(snap);
    const tomb = f.store.getTemplate(t.id);
    assert.deepEqual([tomb.name, tomb.snapshotId], [`kiln-deleted-${t.id}`, null]);
    assert.equal(
      f.svc.templates().some((x) => x.name === 'kiln-img-test'),
      false,
      'its name is free',
    );

    r = await tb.gc.collect({ graceMs: 0 });
    assert.equal(reasonOf(r, t.id), 'sandbox records still name it');
    f.store.purgeEnded('9999-01-01T00:00:00.000Z'); // the store stamps ends with the wall clock
    r = await tb.gc.collect({ graceMs: 0 });
    assert.deepEqual(ids(r.removed), [t.id]);
    assert.throws(() => f.store.getTemplate(t.id), { code: 'not_found' });
    assert.ok(f.store.getTemplate('base').snapshotId, 'base is never a candidate');
  });

  it('a build in progress holds the layer it restored; while it finds its parent, every hidden template', async () => {
    const { guest, running } = blockingGuests();
    let parent: (name: string) => void = () => undefined;
    await start({ deps: { guest } }, () => new Promise<string>((r) => (parent = r)));
    const old = await f.svc.buildTemplate('kiln-img-old', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    const [l] = (await build('bad', run('echo ok', 'fail here'))).layers;
    assert.ok(l);

    const img = startBuild('img', { fromImage: 'registry.test:5000/app:1', steps: [] });
    let r = await tb.gc.collect({ graceMs: 0 });
    assert.equal(reasonOf(r, old.id), 'a template build in progress is finding its parent');
    assert.deepEqual(ids(r.removed), [l], 'layers are not held by a build that has not found its parent');
    parent('base');
    await tb.idle();
    assert.equal(f.store.getBuild(img.id).status, 'ready');
    assert.deepEqual(ids((await tb.gc.collect({ graceMs: 0 })).removed), [old.snapshotId]);

    const [l2] = (await build('bad', run('echo ok2', 'fail here'))).layers;
    assert.ok(l2);
    const slow = startBuild('slow', run('echo ok2', 'block here'));
    await running;
    r = await tb.gc.collect({ graceMs: 0 });
    assert.equal(reasonOf(r, l2), 'held by a template build in progress');
    await tb.cancel(slow.id, undefined);
    assert.deepEqual(ids((await tb.gc.collect({ graceMs: 0 })).removed), [l2]);
    gone(l2);
  });

  for (const step of COLLECT_STEPS)
    it(`a crash right after "collect:${step}": start-up finishes the removal (no record, no directory)`, async () => {
      const crash = new Error(`failpoint collect:${step}`);
      await start({
        deps: {
          failpoint: (kind, name) => {
            if (kind === 'collect' && name === step) throw crash;
          },
        },
      });
      const t = await f.svc.buildTemplate('kiln-img-crash', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
      const snap = t.snapshotId ?? '';
      const r = await tb.gc.collect({ graceMs: 0 });
      assert.match(reasonOf(r, t.id), /its removal failed: failpoint/);
      const [op] = f.store.openOperations();
      assert.equal(op?.kind, 'collect');
      assert.throws(
        () => f.store.getSnapshot(snap),
        { code: 'not_found' },
        'the records went in one transaction',
      );

      const rec = await f.restarted().reconcile();
      assert.deepEqual(rec.finished, [op.id]);
      gone(snap);
      assert.deepEqual(
        (await readdir(join(f.dir, 'snapshots'))).filter((x) => x.startsWith('.gc-')),
        [],
        'nothing moved aside is left',
      );
      assert.deepEqual(f.store.openOperations(), []);
      assert.throws(() => f.store.getTemplate(t.id), { code: 'not_found' });
    });

  it('a removal cut before its records went is taken back at start-up: the snapshot is whole', async () => {
    await start();
    const t = await f.svc.buildTemplate('kiln-img-whole', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    const snap = t.snapshotId ?? '';
    f.store.beginOperation({ id: 'op-gc', kind: 'collect', subject: snap, requestId: null, startedAt: '' });
    const rec = await f.restarted().reconcile();
    assert.deepEqual(rec.unwound, ['op-gc']);
    assert.equal(f.store.getSnapshot(snap).id, snap);
    assert.ok(existsSync(dir(snap)));
    assert.equal(f.store.getTemplate(t.id).snapshotId, snap);
  });
});
