/**
 * SandboxService over the fake driver and recording guests: templates, create and its
 * validation and unwinding, admission (memory, disk), kill, TTL and owners. The same service
 * runs on real QEMU guests in test/integration/sandbox-service.test.ts.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DiskAdmission } from '../admission.ts';
import { SandboxService } from '../sandbox-service.ts';
import { FAKE_IMAGE, NOW, ServiceFixture } from '../testing/fixtures.ts';

describe('SandboxService: create, admission, kill, TTL and owners (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  it('builds a template: a content-addressed snapshot with RAM, state and disk, nothing staged left', () => {
    const tpl = fx.store.getTemplate('base');
    assert.ok(tpl.snapshotId);
    const snap = fx.store.getSnapshot(tpl.snapshotId);
    assert.deepEqual(
      snap.artifacts.map((a) => a.kind),
      ['memory', 'state', 'disk'],
    );
    for (const a of snap.artifacts) assert.ok(existsSync(join(fx.dir, 'snapshots', snap.id, a.path)), a.path);
    assert.deepEqual(fx.store.openOperations(), []);
    assert.equal(existsSync(join(fx.dir, 'snapshots', `.staging-x`)), false);
  });

  it('creates a sandbox from the template: restore, /init with token, env and host time, running', async () => {
    const s = await fx.svc.create(
      { template: 'base', metadata: { team: 'a' }, envVars: { A: '1' } },
      { opId: 'req-1' },
    );
    assert.equal(s.state, 'running');
    assert.equal(s.endAt, new Date(fx.now + 300_000).toISOString());
    assert.equal(s.accessToken.length, 48);
    assert.deepEqual(
      fx.guests.inits.map(({ body: { entropySeed: _, ...b } }) => b),
      [
        {
          accessToken: s.accessToken,
          envVars: { A: '1' },
          // No default user: the restored agent keeps its snapshot's (a template's last USER).
          timestamp: new Date(fx.now).toISOString(),
        },
      ],
    );
    assert.deepEqual(await fx.driver.list(), [s.id]);
    assert.deepEqual(
      fx.svc.list({ metadata: { team: 'a' } }).items.map((x) => x.id),
      [s.id],
    );
    assert.equal((await fx.svc.exec(s.id, 'echo hi')).stdout, 'ran echo hi\n');
    assert.equal(fx.store.listEvents(s.id).items[0]?.message, 'sandbox created');
  });

  it('refuses bad requests before creating anything', async () => {
    const bad: [Parameters<SandboxService['create']>[0], string, RegExp][] = [
      [{ template: 'nope' }, 'not_found', /template or snapshot "nope"/],
      [{ template: '../x' }, 'invalid_argument', /template/],
      [
        { template: 'base', memoryMiB: 1024 },
        'invalid_argument',
        /memoryMiB: must be 512 MiB, the memory of "base"/,
      ],
      [{ template: 'base', vcpus: 0 }, 'invalid_argument', /vcpus/],
      [{ template: 'base', timeoutS: 0 }, 'invalid_argument', /timeout/],
      [{ template: 'base', timeoutS: 10 ** 9 }, 'invalid_argument', /timeout/],
      [{ template: 'base', metadata: { a: 1 as unknown as string } }, 'invalid_argument', /metadata/],
    ];
    for (const [req, code, re] of bad) {
      await assert.rejects(fx.svc.create(req), (e: Error & { code?: string }) => {
        assert.equal(e.code, code, e.message);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.deepEqual(fx.svc.list().items, []);
    assert.deepEqual(await fx.driver.list(), []);
    await assert.rejects(
      Promise.resolve().then(() => fx.svc.get('a/b')),
      { code: 'invalid_argument' },
    );
  });

  it('a failed start unwinds: VM killed, sandbox dead, operation undone', async () => {
    fx.guests.failInit = true;
    await assert.rejects(fx.svc.create({ template: 'base' }), /agent said no/);
    assert.deepEqual(await fx.driver.list(), []);
    const only = fx.svc.list().items;
    assert.deepEqual(
      only.map((x) => [x.state, x.endReason]),
      [['dead', 'failed to start']],
    );
    assert.deepEqual(fx.store.openOperations(), []);
  });

  it('admits creates only within the host memory budget', async () => {
    fx.svc = new SandboxService({ ...fx.deps, capacity: { hostMemoryMiB: 1024, overcommitRatio: 1 } });
    await fx.svc.create({ template: 'base' });
    const b = await fx.svc.create({ template: 'base' });
    await assert.rejects(fx.svc.create({ template: 'base' }), {
      code: 'capacity',
      message: /1024 MiB committed to 2 sandboxes/,
    });
    await fx.svc.kill(b.id);
    await fx.svc.create({ template: 'base' });
  });

  it('admits creates and resumes only while the state disk has room for their disks (no_space)', async () => {
    // The fake template's disk layer is a small plain file: its size is the guest disk's size.
    let free = 0;
    const disk = new DiskAdmission({
      stateDir: fx.dir,
      layers: fx.driver.disks,
      reserveMiB: 1,
      overcommitRatio: 1,
      freeBytes: () => free,
    });
    fx.svc = new SandboxService({ ...fx.deps, disk });
    const snap = fx.store.getSnapshot(fx.store.getTemplate('base').snapshotId ?? '');
    const worst = fx.driver.disks.maxWritableBytes(
      fx.driver.disks.virtualSize(join(fx.dir, 'snapshots', snap.id, 'disk.qcow2')),
    );
    // Short of two disks + the reserve (fake layers of a few dozen bytes differ by a few bytes).
    free = 2 * worst + 2 ** 20 - 1000;
    const a = await fx.svc.create({ template: 'base' });
    assert.equal(fx.svc.diskSizeMiB(a), 0);
    await fx.svc.create({ template: 'base' }).then(
      () => assert.fail('a second disk does not fit next to the first'),
      (e: unknown) => {
        assert.equal((e as { code?: string }).code, 'no_space');
        assert.match((e as Error).message, /1 live sandboxes may still write.*free disk space/);
      },
    );
    assert.equal(fx.svc.list({ states: ['creating', 'running'] }).items.length, 1, 'nothing recorded');
    assert.deepEqual(fx.store.openOperations(), []);
    // A paused sandbox writes nothing, but its resume needs room again.
    await fx.svc.pause(a.id);
    const b = await fx.svc.create({ template: 'base' });
    await assert.rejects(fx.svc.resume(a.id), { code: 'no_space' });
    assert.equal(fx.svc.get(a.id).state, 'paused');
    await fx.svc.kill(b.id);
    assert.equal((await fx.svc.resume(a.id)).state, 'running');
  });

  it('kill: once; a second kill is refused; a concurrent one is a conflict', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const [r1, r2] = await Promise.allSettled([fx.svc.kill(s.id), fx.svc.kill(s.id)]);
    assert.equal(r1.status, 'fulfilled');
    assert.equal(r2.status, 'rejected');
    assert.equal((r2.reason as { code?: string }).code, 'conflict');
    assert.equal(fx.svc.get(s.id).state, 'dead');
    await assert.rejects(fx.svc.kill(s.id), { code: 'invalid_state', message: /already dead/ });
    assert.deepEqual(await fx.driver.list(), []);
  });

  it('a kill during a snapshot waits for it, then ends the sandbox', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const [snap, killed] = await Promise.all([fx.svc.snapshot(s.id), fx.svc.kill(s.id)]);
    assert.equal(killed.state, 'dead');
    assert.equal(fx.store.getSnapshot(snap.id).sandboxId, s.id, 'the snapshot completed first');
    assert.deepEqual(await fx.driver.list(), []);
  });

  it('TTL: setTimeout moves the end; the reaper kills what expired', async () => {
    const a = await fx.svc.create({ template: 'base', timeoutS: 60 });
    const b = await fx.svc.create({ template: 'base', timeoutS: 60 });
    fx.svc.setTimeout(b.id, 3600);
    fx.now += 61_000;
    assert.deepEqual(await fx.svc.reapExpired(), [a.id]);
    assert.equal(fx.svc.get(a.id).endReason, 'timeout');
    assert.equal(fx.svc.get(b.id).state, 'running');
    assert.throws(() => fx.svc.setTimeout(a.id, 10), { code: 'invalid_state' });
  });

  it("owners: what a key makes is its own; kiln and the socket act for the sandbox's key; others cannot restore it", async () => {
    const a = { keyId: 'key-a', admin: false };
    const s = await fx.svc.create({ template: 'base' }, { caller: a });
    assert.equal(s.ownerKeyId, 'key-a');
    assert.equal((await fx.svc.create({ template: 'base' })).ownerKeyId, null, 'the socket: no owner');
    const snap = await fx.svc.snapshot(s.id, { name: 'mine' }, { caller: a });
    assert.equal(snap.ownerKeyId, 'key-a');
    // The reaper's pause and a fork on the socket act for the sandbox's key.
    await fx.svc.pause(s.id);
    assert.equal(fx.store.getSnapshot(fx.svc.get(s.id).sourceSnapshotId ?? '').ownerKeyId, 'key-a');
    await fx.svc.resume(s.id);
    const f = await fx.svc.fork(s.id, { count: 1 });
    const clone = f.results[0];
    assert.ok(clone && 'sandbox' in clone);
    assert.equal(clone.sandbox.ownerKeyId, 'key-a');
    assert.equal(f.snapshot.ownerKeyId, 'key-a');
    for (const ref of ['mine', snap.id])
      await assert.rejects(fx.svc.create({ template: ref }, { caller: { keyId: 'key-b', admin: false } }), {
        code: 'not_found',
        message: `template or snapshot "${ref}" does not exist`,
      });
    const byB = await fx.svc.create({ template: 'base' }, { caller: { keyId: 'key-b', admin: false } });
    assert.equal(byB.ownerKeyId, 'key-b', "kiln's templates are everyone's");
    const byAdmin = await fx.svc.create({ template: 'mine' }, { caller: { keyId: 'key-r', admin: true } });
    assert.equal(byAdmin.ownerKeyId, 'key-r');
  });

  it("kiln's hidden templates (an OCI image's base may be a private image) are not found for a plain key", async () => {
    const img = await fx.svc.buildTemplate('kiln-img-private', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    for (const ref of ['kiln-img-private', img.id])
      await assert.rejects(fx.svc.create({ template: ref }, { caller: { keyId: 'key-b', admin: false } }), {
        code: 'not_found',
        message: `template or snapshot "${ref}" does not exist`,
      });
    // kiln itself (a build's builder) and the socket still use it.
    assert.equal((await fx.svc.create({ template: 'kiln-img-private' })).state, 'running');
  });
});
