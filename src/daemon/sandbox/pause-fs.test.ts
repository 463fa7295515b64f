/** Filesystem-only pause and its cold-boot resume over the fake driver; memory pause unchanged. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../../core/envd-auth.ts';
import type { VmSpec } from '../../vmm/driver.ts';
import { SandboxConnector } from '../connect.ts';
import { DiesInStop, NOW, ServiceFixture } from '../testing/fixtures.ts';
import { join } from 'node:path';

const snapDir = (fx: ServiceFixture, id: string): string => join(fx.dir, 'snapshots', id);
/** Each file of a snapshot directory with the SHA-256 of its bytes and its mtime. */
const fingerprint = (dir: string): string[] =>
  readdirSync(dir)
    .sort()
    .map((f) => {
      const p = join(dir, f);
      const sha = createHash('sha256').update(readFileSync(p)).digest('hex');
      return `${f} ${sha} ${statSync(p).mtimeMs}`;
    });

describe('SandboxService: filesystem-only pause (fake driver)', () => {
  let fx: ServiceFixture;
  let started: VmSpec[];
  beforeEach(async () => {
    fx = await ServiceFixture.start({ now: NOW, base: true });
    started = [];
    const start = fx.driver.start.bind(fx.driver);
    fx.driver.start = (spec, o) => {
      started.push(spec);
      return start(spec, o);
    };
  });
  afterEach(() => fx.close());

  it('keeps the disk only; resume cold-boots on it with the same token, env and a restore-shaped RAM', async () => {
    const s = await fx.svc.create({ template: 'base', envVars: { A: '1' } });
    const paused = await fx.svc.pause(s.id, {}, { memory: false });
    assert.equal(paused.state, 'paused');
    assert.equal(paused.pauseKind, 'filesystem');
    const snap = fx.store.getSnapshot(paused.sourceSnapshotId ?? '');
    assert.equal(snap.kind, 'pause');
    assert.deepEqual(
      snap.artifacts.map((a) => a.kind),
      ['disk'],
    );
    assert.deepEqual(readdirSync(snapDir(fx, snap.id)).sort(), ['disk.qcow2', 'snapshot.json']);
    assert.deepEqual(await fx.driver.list(), [], 'no VM while paused');

    const back = await fx.svc.resume(s.id, { timeoutS: 30 });
    assert.equal(back.state, 'running');
    assert.equal(back.pauseKind, null);
    const spec = started.at(-1);
    assert.ok(spec);
    assert.equal(spec.restore, undefined, 'a boot, not a restore');
    assert.equal(spec.diskLayer, `${snapDir(fx, snap.id)}/disk.qcow2`);
    assert.deepEqual(spec.boot.kernelArgs, [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(s.accessToken)}`]);
    const ram = spec.privateRamFile ?? '';
    assert.equal(statSync(ram).size, 512 * 1024 * 1024, 'a zero file of the memory size');
    const init = fx.guests.inits.at(-1);
    assert.ok(init);
    assert.equal(init.presented, s.accessToken, 'the bootstrap secret is the sandbox token');
    assert.equal(init.body.accessToken, s.accessToken, 'the same envd access token');
    assert.deepEqual(init.body.envVars, { A: '1' });
    const events = fx.store
      .listEvents(s.id)
      .items.map((e) => [e.message, e.data?.['rebooted'] ?? e.data?.['pauseKind']]);
    assert.deepEqual(events.slice(-2), [
      ['sandbox paused', 'filesystem'],
      ['sandbox resumed', true],
    ]);
  });

  it('a memory pause is unchanged: state and RAM kept, resume restores', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const paused = await fx.svc.pause(s.id);
    assert.equal(paused.pauseKind, 'memory');
    assert.deepEqual(
      fx.store
        .getSnapshot(paused.sourceSnapshotId ?? '')
        .artifacts.map((a) => a.kind)
        .sort(),
      ['disk', 'memory', 'state'],
    );
    await fx.svc.resume(s.id);
    assert.ok(started.at(-1)?.restore, 'a restore');
    assert.equal(started.at(-1)?.privateRamFile, undefined);
  });

  it('the reaper pauses a sandbox created with autoPauseMemory: false keeping its filesystem only', async () => {
    const s = await fx.svc.create({
      template: 'base',
      timeoutS: 60,
      autoPause: true,
      autoPauseMemory: false,
    });
    assert.equal(s.autoPauseMemory, false);
    fx.now += 61_000;
    assert.deepEqual(await fx.svc.reapExpired(), [s.id]);
    assert.equal(fx.svc.get(s.id).pauseKind, 'filesystem');
  });

  it('a failing guest sync leaves the sandbox running, nothing taken', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const client = fx.deps.guest;
    fx.deps.guest = (o) => ({
      ...client(o),
      exec: () => Promise.resolve({ exitCode: 1, stdout: '', stderr: 'I/O error', status: 'exit status 1' }),
    });
    const svc = fx.restarted({ guest: fx.deps.guest });
    await assert.rejects(svc.pause(s.id, {}, { memory: false }), (e: unknown) => {
      assert.equal((e as { code?: string }).code, 'guest_agent_error');
      assert.match((e as Error).message, /sync in sandbox .* failed: exit status 1 I\/O error/);
      return true;
    });
    const after = svc.get(s.id);
    assert.equal(after.state, 'running');
    assert.equal(after.pauseKind, null);
    assert.deepEqual(
      fx.store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.deepEqual(fx.store.openOperations(), []);
  });

  it('a crash after the point of no return (the overlay kept) is finished at start-up as a filesystem-only pause', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const dying = fx.restarted({ driver: new DiesInStop(fx.world) });
    void dying.pause(s.id, {}, { memory: false }).catch(() => undefined);
    for (let i = 0; i < 200 && fx.world.get(s.id)?.info.state !== 'stopped'; i++)
      await new Promise((r) => setTimeout(r, 5));
    assert.equal(fx.world.get(s.id)?.info.state, 'stopped');
    const restarted = fx.restarted();
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    const p = restarted.get(s.id);
    assert.equal(p.state, 'paused');
    assert.equal(p.pauseKind, 'filesystem');
    assert.deepEqual(
      fx.store.getSnapshot(p.sourceSnapshotId ?? '').artifacts.map((a) => a.kind),
      ['disk'],
    );
    assert.deepEqual(await fx.driver.list(), []);
    const back = await restarted.resume(s.id);
    assert.equal(back.state, 'running');
    assert.equal(fx.store.listEvents(s.id).items.at(-1)?.data?.['rebooted'], true, 'resumed by a boot');
  });

  it('resume {memory: false} of a memory pause cold-boots on its disk, its memory and state left untouched until the pause is collected', async () => {
    const s = await fx.svc.create({ template: 'base', envVars: { A: '1' } });
    const paused = await fx.svc.pause(s.id);
    assert.equal(paused.pauseKind, 'memory');
    const snap = fx.store.getSnapshot(paused.sourceSnapshotId ?? '');
    const dir = snapDir(fx, snap.id);
    const before = fingerprint(dir);
    assert.deepEqual(
      before.map((l) => l.split(' ')[0]),
      ['disk.qcow2', 'memory', 'snapshot.json', 'state'],
    );

    const back = await fx.svc.resume(s.id, { timeoutS: 30, memory: false });
    assert.equal(back.state, 'running');
    assert.equal(back.pauseKind, null);
    assert.equal(back.accessToken, s.accessToken);
    const spec = started.at(-1);
    assert.ok(spec);
    assert.equal(spec.restore, undefined, 'a boot, not a restore');
    assert.equal(spec.diskLayer, join(dir, 'disk.qcow2'));
    assert.deepEqual(spec.boot.kernelArgs, [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(s.accessToken)}`]);
    assert.notEqual(spec.privateRamFile, join(dir, 'memory'));
    assert.equal(statSync(spec.privateRamFile ?? '').size, 512 * 1024 * 1024, 'a zero file, not the memory');
    const init = fx.guests.inits.at(-1);
    assert.equal(init?.presented, s.accessToken);
    assert.equal(init.body.accessToken, s.accessToken, 'the same envd access token');
    assert.deepEqual(init.body.envVars, { A: '1' });
    assert.deepEqual(fingerprint(dir), before, 'the pause snapshot is not modified');
    assert.deepEqual(
      fx.store
        .getSnapshot(snap.id)
        .artifacts.map((a) => a.kind)
        .sort(),
      ['disk', 'memory', 'state'],
    );
    const ev = fx.store.listEvents(s.id).items.at(-1);
    assert.equal(ev?.message, 'sandbox resumed');
    assert.equal(ev.data?.['rebooted'], true);
    assert.equal(ev.data['memoryIgnored'], true);
    assert.deepEqual(fx.store.openOperations(), []);

    await fx.svc.kill(s.id);
    assert.equal(existsSync(dir), false, 'the pause is collected as usual once nothing stands on it');
  });

  it('resume {memory: false} of a filesystem-only pause is the plain cold boot; a default resume of a memory pause restores', async () => {
    const fsOnly = await fx.svc.create({ template: 'base' });
    await fx.svc.pause(fsOnly.id, {}, { memory: false });
    await fx.svc.resume(fsOnly.id, { memory: false });
    assert.equal(started.at(-1)?.restore, undefined);
    const ev = fx.store.listEvents(fsOnly.id).items.at(-1);
    assert.equal(ev?.data?.['rebooted'], true);
    assert.equal(ev.data['memoryIgnored'], false, 'there was no memory to ignore');

    const mem = await fx.svc.create({ template: 'base' });
    await fx.svc.pause(mem.id);
    await fx.svc.resume(mem.id, { memory: true });
    assert.ok(started.at(-1)?.restore, 'memory: true restores');
    assert.equal(fx.store.listEvents(mem.id).items.at(-1)?.data?.['rebooted'], false);
  });

  it('a failed cold boot leaves the memory pause as it was: paused with memory, then restorable', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const paused = await fx.svc.pause(s.id);
    const dir = snapDir(fx, paused.sourceSnapshotId ?? '');
    const before = fingerprint(dir);
    const start = fx.driver.start.bind(fx.driver);
    fx.driver.start = (spec, o) =>
      spec.restore ? start(spec, o) : Promise.reject(new Error('no kernel today'));
    await assert.rejects(fx.svc.resume(s.id, { memory: false }), /no kernel today/);
    const after = fx.svc.get(s.id);
    assert.equal(after.state, 'paused');
    assert.equal(after.pauseKind, 'memory');
    assert.deepEqual(fingerprint(dir), before);
    assert.deepEqual(await fx.driver.list(), []);
    assert.deepEqual(fx.store.openOperations(), []);
    const back = await fx.svc.resume(s.id);
    assert.equal(back.state, 'running');
    assert.ok(started.at(-1)?.restore, 'restored from its memory');
  });

  it('connect {memory: false}: a paused sandbox reboots; a running one is left running (no resume, no boot)', async () => {
    const connector = new SandboxConnector(fx.svc, () => fx.now);
    const s = await fx.svc.create({ template: 'base' });
    await fx.svc.pause(s.id);
    const r = await connector.connect(s.id, { timeoutS: 60, memory: false });
    assert.equal(r.resumed, true);
    assert.equal(started.at(-1)?.restore, undefined, 'cold-booted');
    const boots = started.length;
    const again = await connector.connect(s.id, { memory: false });
    assert.equal(again.resumed, false);
    assert.equal(started.length, boots, 'a running sandbox is not rebooted');
  });
});
