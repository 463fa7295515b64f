/**
 * The warm pool over the fake driver (issue 15): refill to size, a create that takes a member
 * (only /init, with the token its fill's warm-up gave it), what cannot take one, members
 * invisible to lists but counted by admission, eviction under memory pressure, draining
 * (template deleted, rebuilt, sized down, a dead member) and start-up recovery. The same on
 * real guests: test/integration/warm-pool.test.ts.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { SandboxService } from '../sandbox-service.ts';
import { memberToken } from './fill.ts';
import { FAKE_IMAGE, NOW, ServiceFixture } from '../testing/fixtures.ts';

describe('warm pool (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  const members = (): string[] =>
    fx.store
      .listPoolVms()
      .map((m) => m.id)
      .sort();
  const vms = async (): Promise<string[]> => (await fx.driver.list()).sort();
  const baseSnap = () => fx.store.getSnapshot(fx.store.getTemplate('base').snapshotId ?? '');

  it('fills a template to its size: restored VMs waited for and warmed up, invisible in every list', async () => {
    const st = fx.svc.setWarmPoolSize('base', 2);
    assert.deepEqual({ size: st.size, sizeSet: st.sizeSet }, { size: 2, sizeSet: true });
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2);
    assert.deepEqual(await vms(), members(), 'each member is a running VM');
    assert.ok(fx.store.listPoolVms().every((m) => m.state === 'ready' && m.snapshotId === baseSnap().id));
    // The warm-up: an /init presenting the bootstrap token that gives each member its own
    // token (no env, a seed), then one command with that token; nothing else.
    const tokens = members().map((id) => memberToken(baseSnap(), id));
    assert.equal(new Set([...tokens, baseSnap().guestToken]).size, 3);
    assert.deepEqual(
      fx.guests.inits.map((i) => ({
        presented: i.presented,
        env: i.body.envVars,
        seeded: !!i.body.entropySeed,
      })),
      [0, 1].map(() => ({ presented: baseSnap().guestToken, env: undefined, seeded: true })),
    );
    assert.deepEqual(fx.guests.inits.map((i) => i.body.accessToken).sort(), [...tokens].sort());
    assert.deepEqual(
      [...fx.guests.execs].sort((a, b) => (a.presented ?? '').localeCompare(b.presented ?? '')),
      [...tokens].sort().map((t) => ({ cmd: 'true', presented: t })),
    );
    assert.deepEqual(fx.svc.list().items, [], 'no sandbox list shows them');
    assert.deepEqual(fx.svc.list({ states: ['creating', 'running'] }).items, []);
    assert.deepEqual(
      fx.svc.warmPool().map(({ template, size, ready, starting }) => ({ template, size, ready, starting })),
      [{ template: 'base', size: 2, ready: 2, starting: 0 }],
    );
    // Each fill is journalled and finished.
    assert.deepEqual(fx.store.openOperations(), []);
    // Members stand on the template's layer (it cannot be reclaimed under them).
    assert.deepEqual(fx.store.snapshotDependents(baseSnap().id).sandboxes, members());
    // Another pass at size adds nothing.
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2);
  });

  it('a create takes a member: its VM becomes the sandbox, only /init runs (fresh token, env, clock, seed)', async () => {
    fx.svc.setWarmPoolSize('base', 2);
    await fx.svc.refillWarmPool();
    const before = members();
    const fills = fx.guests.inits.length;
    assert.equal(fx.guests.execs.length, 2, 'one warm-up command per member');
    const s = await fx.svc.create({ template: 'base', envVars: { A: '1' } }, { opId: 'req-p' });
    assert.ok(before.includes(s.id), 'the sandbox is the member it took');
    assert.equal(s.state, 'running');
    assert.deepEqual(members(), before.filter((id) => id !== s.id).sort());
    assert.equal(fx.guests.inits.length, fills + 1, 'the take runs one /init');
    assert.equal(fx.guests.execs.length, 2, 'and no command');
    const init = fx.guests.inits[fills];
    assert.ok(init);
    assert.equal(init.presented, memberToken(baseSnap(), s.id), "the member's token was presented");
    assert.equal(init.body.accessToken, s.accessToken);
    assert.deepEqual(init.body.envVars, { A: '1' });
    assert.equal(init.body.timestamp, new Date(fx.now).toISOString());
    assert.ok(init.body.entropySeed);
    assert.equal(fx.store.listEvents(s.id).items[0]?.data?.['warmPool'], true);
    assert.deepEqual(
      fx.svc.list().items.map((x) => x.id),
      [s.id],
    );
    // Two pooled creates get two members, two tokens, two seeds.
    const t = await fx.svc.create({ template: 'base' });
    assert.ok(before.includes(t.id));
    assert.notEqual(t.accessToken, s.accessToken);
    assert.notEqual(fx.guests.inits[fills + 1]?.body.entropySeed, init.body.entropySeed);
    assert.deepEqual(members(), []);
    // The pool refills to its size; an empty pool means a normal restore.
    const u = await fx.svc.create({ template: 'base' });
    assert.ok(!before.includes(u.id));
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2);
    assert.equal((await vms()).length, 5);
  });

  it('KILN_WARM_POOL sizes the default template unless a size is set; null goes back to it', async () => {
    fx.svc = new SandboxService({ ...fx.deps, warmPool: { defaultSize: 1 } });
    assert.deepEqual(fx.svc.warmPoolOf('base').size, 1);
    assert.equal(fx.svc.warmPoolOf('base').sizeSet, false);
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 1);
    fx.svc.setWarmPoolSize('base', 0);
    await fx.svc.refillWarmPool();
    assert.deepEqual(members(), [], 'sized down: drained');
    assert.deepEqual(await vms(), []);
    assert.equal(fx.svc.setWarmPoolSize('base', null).size, 1);
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 1);
    assert.throws(() => fx.svc.setWarmPoolSize('base', 65), { code: 'invalid_argument' });
    assert.throws(() => fx.svc.setWarmPoolSize('nope', 1), { code: 'not_found' });
  });

  it('creates that cannot take a member restore as before: a snapshot, internet off without sandbox networks', async () => {
    fx.svc.setWarmPoolSize('base', 1);
    await fx.svc.refillWarmPool();
    const pooled = members();
    const off = await fx.svc.create({ template: 'base', allowInternet: false });
    assert.ok(!pooled.includes(off.id));
    const src = await fx.svc.create({ template: 'base' });
    assert.ok(pooled.includes(src.id));
    await fx.svc.refillWarmPool();
    const snap = await fx.svc.snapshot(src.id, { name: 'snap-a' });
    const again = members();
    const r = await fx.svc.restore(snap.id);
    assert.ok(!again.includes(r.id));
    assert.deepEqual(members(), again, 'the pool is untouched by a restore');
  });

  it('a failed /init of a taken member kills it and records the sandbox dead', async () => {
    fx.svc.setWarmPoolSize('base', 1);
    await fx.svc.refillWarmPool();
    const [m] = members();
    fx.guests.failInit = true;
    await assert.rejects(fx.svc.create({ template: 'base' }), /agent said no/);
    assert.equal(fx.store.getSandbox(m ?? '').state, 'dead');
    assert.deepEqual(await vms(), []);
    assert.deepEqual(fx.store.openOperations(), []);
  });

  it("a member's failed warm-up unwinds its fill: no member, no VM, the operation closed", async () => {
    fx.svc.setWarmPoolSize('base', 1);
    fx.guests.failInit = true;
    await assert.rejects(fx.svc.refillWarmPool(), /agent said no/);
    assert.deepEqual(members(), []);
    assert.deepEqual(await vms(), []);
    assert.deepEqual(fx.store.openOperations(), []);
    fx.guests.failInit = false;
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 1, 'the next pass fills it');
  });

  it('members count for admission; a refused create or resume kills members to make room', async () => {
    // Room for 3 VMs of 512 MiB.
    fx.svc = new SandboxService({ ...fx.deps, capacity: { hostMemoryMiB: 1536, overcommitRatio: 1 } });
    fx.svc.setWarmPoolSize('base', 3);
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 3);
    // A pooled create replaces a member: admitted though the pool holds all the memory.
    const a = await fx.svc.create({ template: 'base' });
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2, 'refill stops at the memory limit');
    // Not poolable (internet off): admission refuses, so a member is killed first.
    const b = await fx.svc.create({ template: 'base', allowInternet: false });
    assert.equal(members().length, 1);
    assert.equal((await vms()).length, 3);
    // A paused sandbox's memory stays committed (admission's rule): the pool does not grow.
    await fx.svc.pause(b.id);
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 1);
    // Its resume is refused for room, so the last member is killed for it.
    await fx.svc.resume(b.id);
    assert.deepEqual(members(), []);
    await fx.svc.create({ template: 'base' });
    await assert.rejects(fx.svc.create({ template: 'base' }), {
      code: 'capacity',
      message: /1536 MiB committed to 3 sandboxes \+ 512 MiB would pass the limit of 1536 MiB/,
    });
    await fx.svc.kill(a.id);
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 1);
    // A restore of a snapshot (never from the pool) makes room the same way.
    const snap = await fx.svc.snapshot(b.id);
    await fx.svc.restore(snap.id);
    assert.deepEqual(members(), []);
    assert.equal((await vms()).length, 3);
  });

  it('drains a deleted template, a rebuilt one and members whose VM stopped', async () => {
    fx.svc.setWarmPoolSize('base', 2);
    await fx.svc.refillWarmPool();
    const [dead] = members();
    fx.driver.crash(dead ?? '');
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2);
    assert.ok(!members().includes(dead ?? ''), 'a member whose VM stopped was replaced');
    // Rebuilt: another snapshot; older members go, new ones come.
    const old = members();
    await fx.buildBase();
    await fx.svc.refillWarmPool();
    assert.equal(members().length, 2);
    assert.ok(members().every((id) => !old.includes(id)));
    assert.ok(fx.store.listPoolVms().every((m) => m.snapshotId === baseSnap().id));
    // Deletion: drained (the template build service does this before hiding its layers).
    const t = fx.store.getTemplate('base');
    fx.store.putTemplate({ ...t, snapshotId: null });
    assert.equal((await fx.svc.drainWarmPool(t.id)).length, 2);
    assert.deepEqual(members(), []);
    assert.deepEqual(await vms(), []);
    await fx.svc.refillWarmPool();
    assert.deepEqual(members(), [], 'no member of a template without a snapshot');
  });

  it('start-up: an interrupted fill is unwound, ready members re-adopted or removed, nothing leaked', async () => {
    fx.svc.setWarmPoolSize('base', 2);
    await fx.svc.refillWarmPool();
    const [kept, lost] = members();
    await fx.driver.kill(lost ?? '');
    // A fill interrupted after its VM started (as kill -9 at `pool-fill:guest ready` leaves it).
    const snap = baseSnap();
    const tpl = fx.store.getTemplate('base');
    fx.store.insertPoolVm({
      id: 'sbx-half',
      templateId: tpl.id,
      snapshotId: snap.id,
      memoryMiB: 512,
      state: 'starting',
      createdAt: new Date(NOW).toISOString(),
    });
    fx.store.beginOperation({
      id: 'op-fill',
      kind: 'pool-fill',
      subject: 'sbx-half',
      requestId: null,
      startedAt: '',
    });
    fx.store.addStep('op-fill', {
      name: 'pool record',
      undo: { action: 'delete-pool-vm', vmId: 'sbx-half' },
      at: '',
    });
    fx.store.addStep('op-fill', { name: 'vm', undo: { action: 'kill-vm', vmId: 'sbx-half' }, at: '' });
    await fx.driver.start({
      id: 'sbx-half',
      boot: { kernel: FAKE_IMAGE.kernel, initrd: FAKE_IMAGE.initrd, rootfs: FAKE_IMAGE.rootfs },
      resources: { memoryMiB: 512, vcpus: 1 },
      network: { kind: 'open' },
    });
    fx.store.addStep('op-fill', { name: 'guest ready', undo: { action: 'none' }, at: '' });
    const svc = fx.restarted();
    const rep = await svc.reconcile();
    assert.deepEqual(rep.unwound, ['op-fill']);
    assert.deepEqual(rep.poolAdopted, [kept]);
    assert.deepEqual(rep.poolRemoved, [lost]);
    assert.deepEqual(rep.orphans, []);
    assert.deepEqual(members(), [kept]);
    assert.deepEqual(await vms(), [kept]);
    assert.deepEqual(fx.store.openOperations(), []);
    await svc.refillWarmPool();
    assert.equal(members().length, 2);
    // A re-adopted member serves a create.
    const ready = members();
    const s = await svc.create({ template: 'base' });
    assert.ok(ready.includes(s.id), 'a member is taken');
    assert.equal(fx.store.listEvents(s.id).items[0]?.data?.['warmPool'], true);
  });

  it('a VM the pool lost track of (record deleted, crash before its kill) is killed as an orphan at start-up', async () => {
    fx.svc.setWarmPoolSize('base', 1);
    await fx.svc.refillWarmPool();
    const [m] = members();
    fx.store.deletePoolVm(m ?? '');
    const rep = await fx.restarted().reconcile();
    assert.deepEqual(rep.orphans, [m]);
    assert.deepEqual(await vms(), []);
  });
});
