/**
 * SandboxService over the fake driver and a recording guest client: lifecycle, validation,
 * journal unwinding, capacity, TTL, liveness and start-up reconciliation. The same service runs
 * on real QEMU guests in test/integration/sandbox-service.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import type { StopOpts, VmSpec } from '../vmm/driver.ts';
import { FakeDriver, type FakeWorld } from '../vmm/fake-driver.ts';
import { DiskAdmission } from './admission.ts';
import type { ExecResult, GuestClient, GuestMetrics, InitBody } from './guest-client.ts';
import { SandboxService, type SandboxServiceDeps } from './sandbox-service.ts';
import {
  ARCHIVE_FILES,
  ARCHIVE_FORMAT,
  MANIFEST,
  artifact,
  packArchive,
  type ArchiveManifest,
} from './snapshot-archive.ts';

class RecordingGuest implements GuestClient {
  static inits: InitBody[] = [];
  static failInit = false;
  /** The guest agent stopped answering. */
  static hung = false;
  health(): Promise<void> {
    if (RecordingGuest.hung)
      return Promise.reject(
        new KilnError('guest_agent_error', 'did not answer /health: no answer within 3000 ms'),
      );
    return Promise.resolve();
  }
  init(body: InitBody): Promise<void> {
    if (RecordingGuest.failInit) return Promise.reject(new Error('agent said no'));
    RecordingGuest.inits.push(body);
    return Promise.resolve();
  }
  exec(cmd: string): Promise<ExecResult> {
    return Promise.resolve({ exitCode: 0, stdout: `ran ${cmd}\n`, stderr: '', status: 'exit status 0' });
  }
  metrics(): Promise<GuestMetrics> {
    return Promise.resolve({
      ts: 1,
      cpu_count: 1,
      cpu_used_pct: 12.5,
      mem_total: 512 * 2 ** 20,
      mem_used: 100 * 2 ** 20,
      mem_cache: 10 * 2 ** 20,
      disk_used: 2 ** 30,
      disk_total: 2 ** 31,
    });
  }
}

const IMAGE = { key: 'img-1', kernel: '/img/vmlinuz', initrd: '/img/initrd.img', rootfs: '/img/rootfs.ext4' };
/** A VM of the fake image, started behind the service's back. */
const vmSpec = (id: string): VmSpec => ({
  id,
  boot: { kernel: IMAGE.kernel, initrd: IMAGE.initrd, rootfs: IMAGE.rootfs },
  resources: { memoryMiB: 512, vcpus: 1 },
  network: { kind: 'restricted' },
});

describe('SandboxService (fake driver)', () => {
  let dir: string;
  let store: SqliteStore;
  let world: FakeWorld;
  let driver: FakeDriver;
  let now: number;
  let deps: SandboxServiceDeps;
  let svc: SandboxService;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-svc-'));
    store = new SqliteStore(join(dir, 'state.db'));
    world = new Map();
    driver = new FakeDriver(world);
    now = Date.parse('2026-06-01T00:00:00Z');
    RecordingGuest.inits = [];
    RecordingGuest.failInit = false;
    RecordingGuest.hung = false;
    deps = {
      store,
      driver,
      guest: () => new RecordingGuest(),
      image: () => Promise.resolve(IMAGE),
      dataDir: dir,
      log: nullLogger,
      now: () => now,
    };
    svc = new SandboxService(deps);
    await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 }, { opId: 'req-t' });
  });
  afterEach(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('builds a template: a content-addressed snapshot with RAM, state and disk, nothing staged left', () => {
    const tpl = store.getTemplate('base');
    assert.ok(tpl.snapshotId);
    const snap = store.getSnapshot(tpl.snapshotId);
    assert.deepEqual(
      snap.artifacts.map((a) => a.kind),
      ['memory', 'state', 'disk'],
    );
    for (const a of snap.artifacts) assert.ok(existsSync(join(dir, 'snapshots', snap.id, a.path)), a.path);
    assert.deepEqual(store.openOperations(), []);
    assert.equal(existsSync(join(dir, 'snapshots', `.staging-x`)), false);
  });

  it('creates a sandbox from the template: restore, /init with token, env and host time, running', async () => {
    const s = await svc.create(
      { template: 'base', metadata: { team: 'a' }, envVars: { A: '1' } },
      { opId: 'req-1' },
    );
    assert.equal(s.state, 'running');
    assert.equal(s.endAt, new Date(now + 300_000).toISOString());
    assert.equal(s.accessToken.length, 48);
    assert.deepEqual(RecordingGuest.inits, [
      {
        accessToken: s.accessToken,
        envVars: { A: '1' },
        defaultUser: 'user',
        timestamp: new Date(now).toISOString(),
      },
    ]);
    assert.deepEqual(await driver.list(), [s.id]);
    assert.deepEqual(
      svc.list({ metadata: { team: 'a' } }).items.map((x) => x.id),
      [s.id],
    );
    assert.equal((await svc.exec(s.id, 'echo hi')).stdout, 'ran echo hi\n');
    assert.equal(store.listEvents(s.id).items[0]?.message, 'sandbox created');
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
      await assert.rejects(svc.create(req), (e: Error & { code?: string }) => {
        assert.equal(e.code, code, e.message);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.deepEqual(svc.list().items, []);
    assert.deepEqual(await driver.list(), []);
    await assert.rejects(
      Promise.resolve().then(() => svc.get('a/b')),
      { code: 'invalid_argument' },
    );
  });

  it('a failed start unwinds: VM killed, sandbox dead, operation undone', async () => {
    RecordingGuest.failInit = true;
    await assert.rejects(svc.create({ template: 'base' }), /agent said no/);
    assert.deepEqual(await driver.list(), []);
    const only = svc.list().items;
    assert.deepEqual(
      only.map((x) => [x.state, x.endReason]),
      [['dead', 'failed to start']],
    );
    assert.deepEqual(store.openOperations(), []);
  });

  it('admits creates only within the host memory budget', async () => {
    svc = new SandboxService({ ...deps, capacity: { hostMemoryMiB: 1024, overcommitRatio: 1 } });
    await svc.create({ template: 'base' });
    const b = await svc.create({ template: 'base' });
    await assert.rejects(svc.create({ template: 'base' }), {
      code: 'capacity',
      message: /1024 MiB committed to 2 sandboxes/,
    });
    await svc.kill(b.id);
    await svc.create({ template: 'base' });
  });

  it('admits creates and resumes only while the state disk has room for their disks (no_space)', async () => {
    // The fake template's disk layer is a small plain file: its size is the guest disk's size.
    let free = 0;
    const disk = new DiskAdmission({
      stateDir: dir,
      layers: driver.disks,
      reserveMiB: 1,
      overcommitRatio: 1,
      freeBytes: () => free,
    });
    svc = new SandboxService({ ...deps, disk });
    const snap = store.getSnapshot(store.getTemplate('base').snapshotId ?? '');
    const worst = driver.disks.maxWritableBytes(
      driver.disks.virtualSize(join(dir, 'snapshots', snap.id, 'disk.qcow2')),
    );
    // Short of two disks + the reserve (fake layers of a few dozen bytes differ by a few bytes).
    free = 2 * worst + 2 ** 20 - 1000;
    const a = await svc.create({ template: 'base' });
    assert.equal(svc.diskSizeMiB(a), 0);
    await svc.create({ template: 'base' }).then(
      () => assert.fail('a second disk does not fit next to the first'),
      (e: unknown) => {
        assert.equal((e as { code?: string }).code, 'no_space');
        assert.match((e as Error).message, /1 live sandboxes may still write.*free disk space/);
      },
    );
    assert.equal(svc.list({ states: ['creating', 'running'] }).items.length, 1, 'nothing recorded');
    assert.deepEqual(store.openOperations(), []);
    // A paused sandbox writes nothing, but its resume needs room again.
    await svc.pause(a.id);
    const b = await svc.create({ template: 'base' });
    await assert.rejects(svc.resume(a.id), { code: 'no_space' });
    assert.equal(svc.get(a.id).state, 'paused');
    await svc.kill(b.id);
    assert.equal((await svc.resume(a.id)).state, 'running');
  });

  it('kill: once; a second kill is refused; a concurrent one is a conflict', async () => {
    const s = await svc.create({ template: 'base' });
    const [r1, r2] = await Promise.allSettled([svc.kill(s.id), svc.kill(s.id)]);
    assert.equal(r1.status, 'fulfilled');
    assert.equal(r2.status, 'rejected');
    assert.equal((r2.reason as { code?: string }).code, 'conflict');
    assert.equal(svc.get(s.id).state, 'dead');
    await assert.rejects(svc.kill(s.id), { code: 'invalid_state', message: /already dead/ });
    assert.deepEqual(await driver.list(), []);
  });

  it('a kill during a snapshot waits for it, then ends the sandbox', async () => {
    const s = await svc.create({ template: 'base' });
    const [snap, killed] = await Promise.all([svc.snapshot(s.id), svc.kill(s.id)]);
    assert.equal(killed.state, 'dead');
    assert.equal(store.getSnapshot(snap.id).sandboxId, s.id, 'the snapshot completed first');
    assert.deepEqual(await driver.list(), []);
  });

  it('TTL: setTimeout moves the end; the reaper kills what expired', async () => {
    const a = await svc.create({ template: 'base', timeoutS: 60 });
    const b = await svc.create({ template: 'base', timeoutS: 60 });
    svc.setTimeout(b.id, 3600);
    now += 61_000;
    assert.deepEqual(await svc.reapExpired(), [a.id]);
    assert.equal(svc.get(a.id).endReason, 'timeout');
    assert.equal(svc.get(b.id).state, 'running');
    assert.throws(() => svc.setTimeout(a.id, 10), { code: 'invalid_state' });
  });

  it("a VM that died by itself is marked dead by the liveness check, with its console's last words", async () => {
    const s = await svc.create({ template: 'base' });
    const panic = 'Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009';
    // As a real panic looks: the cause, the panic line, a long stack dump, and the VM is gone.
    const dump = Array.from({ length: 45 }, (_, i) => `[   12.4]  ? frame_${i}+0x1/0x2`);
    driver.crash(s.id, [
      '[   12.3] Out of memory: Killed process 77 (node)',
      `[   12.4] ${panic}`,
      ...dump,
      '[   12.5] Kernel Offset: 0x37e00000 from 0xffffffff81000000',
    ]);
    assert.deepEqual(await svc.checkLiveness(), [s.id]);
    assert.equal(svc.get(s.id).endReason, `vm exited: ${panic}`);
    const ev = svc.logs(s.id).items.find((e) => e.message === `vm exited: ${panic}`);
    const excerpt = ev?.data?.['console'] as string[];
    assert.equal(excerpt[0], '[   12.3] Out of memory: Killed process 77 (node)', 'what led to the panic');
    assert.equal(excerpt.length, 26, 'the event carries the panic and the start of its dump');
    // Without a panic line, the last line the guest wrote; with an empty console, a bare exit.
    const t = await svc.create({ template: 'base' });
    driver.crash(t.id, ['booted', 'agent: listening']);
    const u = await svc.create({ template: 'base' });
    driver.crash(u.id);
    assert.deepEqual((await svc.checkLiveness()).sort(), [t.id, u.id].sort());
    assert.equal(svc.get(t.id).endReason, "vm exited; the guest's last console line: agent: listening");
    assert.equal(svc.get(u.id).endReason, 'vm exited');
  });

  it('a host error reading the VM (EMFILE) is not death: liveness and reconcile leave the sandbox alone', async () => {
    const s = await svc.create({ template: 'base' });
    driver.failIo('EMFILE');
    assert.deepEqual(await svc.checkLiveness(), []);
    assert.deepEqual([svc.get(s.id).state, svc.get(s.id).endReason], ['running', null]);
    const restarted = new SandboxService({ ...deps, driver });
    const r = await restarted.reconcile().finally(() => {
      driver.failIo(undefined);
    });
    assert.deepEqual([r.unchecked, r.adopted, r.dead], [[s.id], [], []]);
    assert.equal(svc.get(s.id).state, 'running');
    assert.deepEqual(await driver.list(), [s.id], 'its VM was neither killed nor cleaned up');
    assert.deepEqual(await svc.checkLiveness(), []);
    assert.equal((await svc.exec(s.id, 'true')).exitCode, 0);
  });

  it('a VM whose directory vanished is killed (it cannot be re-adopted) and the reason recorded', async () => {
    const a = await svc.create({ template: 'base' });
    const b = await svc.create({ template: 'base' });
    driver.loseDir(a.id);
    assert.deepEqual(await svc.checkLiveness(), [a.id]);
    assert.match(
      svc.get(a.id).endReason ?? '',
      /^vm lost: VM sbx-\w+ has no record but its process \d+ still runs/,
    );
    assert.equal(driver.processAlive(a.id), false, 'its process was killed');
    // At start-up too.
    driver.loseDir(b.id);
    const r = await new SandboxService({ ...deps, driver }).reconcile();
    assert.deepEqual(r.dead, [b.id]);
    assert.match(
      svc.get(b.id).endReason ?? '',
      /could not be re-adopted without its QMP socket, so it was killed/,
    );
    assert.equal(driver.processAlive(b.id), false);
  });

  it('a guest agent that stops answering is flagged unresponsive; exec fails at once; it clears when it answers', async () => {
    svc = new SandboxService({ ...deps, liveness: { probeEveryMs: 1000, failuresToFlag: 2 } });
    const s = await svc.create({ template: 'base' });
    RecordingGuest.hung = true;
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null, 'one failed probe is not enough');
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null, 'probes are spaced');
    now += 1000;
    await svc.checkLiveness();
    const c = svc.get(s.id).condition;
    assert.ok(c);
    assert.equal(c.code, 'unresponsive');
    assert.match(c.message, /has not answered \/health 2 times in a row/);
    assert.equal(c.since, new Date(now).toISOString());
    assert.equal(svc.get(s.id).state, 'running', 'the state stays truthful');
    await assert.rejects(svc.exec(s.id, 'true'), {
      code: 'guest_agent_error',
      message: new RegExp(`sandbox ${s.id} is not responding \\(since ${c.since}\\)`),
    });
    await assert.rejects(svc.agent(s.id), { code: 'guest_agent_error' });
    // It answers again: the next call re-probes, clears the mark and goes through.
    RecordingGuest.hung = false;
    assert.equal((await svc.exec(s.id, 'true')).exitCode, 0);
    assert.equal(svc.get(s.id).condition, null);
    assert.ok(svc.logs(s.id).items.some((e) => e.message.startsWith('sandbox unresponsive no more')));
  });

  it('QEMU stopped the VM on a full disk: disk_full while running, exec fails with no_space, resumed once due', async () => {
    svc = new SandboxService({ ...deps, liveness: { diskRetryEveryMs: 30_000 } });
    const s = await svc.create({ template: 'base' });
    driver.ioError(s.id);
    await svc.checkLiveness();
    const c = svc.get(s.id).condition;
    assert.ok(c);
    assert.equal(c.code, 'disk_full');
    assert.match(c.message, /no space left for this sandbox's disk.*No space left on device.*every 30 s/);
    assert.equal(svc.get(s.id).state, 'running');
    await assert.rejects(svc.exec(s.id, 'true'), { code: 'no_space', message: /is stopped.*no space left/ });
    now += 30_000;
    await svc.checkLiveness(); // kiln retries: `cont`
    assert.equal((await driver.status(s.id)).state, 'running');
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null);
    assert.equal((await svc.exec(s.id, 'true')).exitCode, 0);
    // Another I/O error than a full disk is vm_stopped, and not retried.
    driver.ioError(s.id, false);
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition?.code, 'vm_stopped');
    await assert.rejects(svc.exec(s.id, 'true'), {
      code: 'invalid_state',
      message: /VM is stopped.*Input\/output error/,
    });
    // Paused by kiln, the sandbox has no VM: the mark goes.
    await driver.resume(s.id);
    await svc.pause(s.id);
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null);
  });

  it('a VM paused outside kiln is vm_stopped after two checks (one may be a snapshot in progress)', async () => {
    const s = await svc.create({ template: 'base' });
    await driver.pause(s.id);
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null);
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition?.code, 'vm_stopped');
    await driver.resume(s.id);
    await svc.checkLiveness();
    assert.equal(svc.get(s.id).condition, null);
  });

  it('reconcile after a crash: adopts live sandboxes, unwinds interrupted ops, kills orphans', async () => {
    const live = await svc.create({ template: 'base' });
    const lost = await svc.create({ template: 'base' });
    await driver.kill(lost.id); // its VM vanished while the daemon was down
    // An interrupted create: record + VM made, never finished.
    const tpl = store.getTemplate('base');
    store.insertSandbox({
      ...svc.get(live.id),
      id: 'sbx-half',
      state: 'creating',
      sourceSnapshotId: tpl.snapshotId,
    });
    store.beginOperation({
      id: 'op-half',
      kind: 'create',
      subject: 'sbx-half',
      requestId: 'req-x',
      startedAt: new Date(now).toISOString(),
    });
    store.addStep('op-half', {
      name: 'sandbox record',
      undo: { action: 'delete-sandbox', sandboxId: 'sbx-half' },
      at: new Date(now).toISOString(),
    });
    store.addStep('op-half', {
      name: 'vm',
      undo: { action: 'kill-vm', vmId: 'sbx-half' },
      at: new Date(now).toISOString(),
    });
    await driver.start(vmSpec('sbx-half'));
    await driver.start(vmSpec('stray'));
    await mkdir(join(dir, 'snapshots', '.staging-op-dead'), { recursive: true });

    const restarted = new SandboxService({ ...deps, driver: new FakeDriver(world) });
    const r = await restarted.reconcile();
    assert.deepEqual(r.adopted, [live.id]);
    assert.deepEqual(r.unwound, ['op-half']);
    assert.deepEqual(r.dead.sort(), [lost.id].sort());
    assert.deepEqual(r.orphans, ['stray']);
    assert.equal(restarted.get('sbx-half').state, 'dead');
    assert.equal(restarted.get(lost.id).endReason, 'lost in a daemon restart');
    assert.deepEqual(await driver.list(), [live.id]);
    assert.deepEqual(store.openOperations(), []);
    assert.equal(existsSync(join(dir, 'snapshots', '.staging-op-dead')), false);
  });

  it('autoPause: the reaper pauses instead of killing; a paused sandbox stays until resumed', async () => {
    const s = await svc.create({ template: 'base', timeoutS: 60, autoPause: true });
    now += 61_000;
    assert.deepEqual(await svc.reapExpired(), [s.id]);
    const paused = svc.get(s.id);
    assert.equal(paused.state, 'paused');
    assert.equal(store.getSnapshot(paused.sourceSnapshotId ?? '').kind, 'pause');
    assert.deepEqual(await driver.list(), [], 'no VM while paused');
    now += 3600_000;
    assert.deepEqual(await svc.reapExpired(), [], 'paused sandboxes are not reaped');
    assert.deepEqual(await svc.checkLiveness(), [], 'nor taken for dead');
    const r = await svc.resume(s.id, { timeoutS: 30 });
    assert.equal(r.state, 'running');
    assert.equal(r.endAt, new Date(now + 30_000).toISOString());
    assert.equal(RecordingGuest.inits.at(-1)?.accessToken, s.accessToken, 'same token after resume');
    await svc.kill(s.id);
    assert.deepEqual(
      store.listSnapshots().map((x) => x.kind),
      ['template'],
      'the pause snapshot went with its sandbox',
    );
  });

  it('refuses snapshot, pause, resume and fork in the wrong state, changing nothing', async () => {
    const s = await svc.create({ template: 'base' });
    const dead = await svc.create({ template: 'base' });
    await svc.kill(dead.id);
    const code = async (p: Promise<unknown>, c: string, re: RegExp): Promise<void> => {
      await assert.rejects(p, (e: unknown) => {
        assert.equal((e as { code?: string }).code, c);
        assert.match((e as Error).message, re);
        return true;
      });
    };
    await code(svc.snapshot(dead.id), 'invalid_state', /is dead; a snapshot needs running/);
    await code(svc.pause(dead.id), 'invalid_state', /is dead; pausing needs running/);
    await code(svc.resume(s.id), 'invalid_state', /is running; resume needs paused/);
    await code(svc.fork('sbx-nope', { count: 2 }), 'not_found', /sbx-nope/);
    await code(svc.fork(s.id, { count: 33 }), 'invalid_argument', /count/);
    await code(svc.snapshot(s.id, { name: 'base' }), 'already_exists', /template's name/);
    await code(svc.restore('snap-nope'), 'not_found', /snap-nope/);
    await code(
      svc.deleteSnapshot(store.getTemplate('base').snapshotId ?? ''),
      'invalid_state',
      /template "base"/,
    );
    await svc.pause(s.id);
    const pauseSnap = svc.get(s.id).sourceSnapshotId ?? '';
    await code(svc.restore(pauseSnap), 'invalid_state', /resume that sandbox instead/);
    await code(svc.create({ template: pauseSnap }), 'not_found', /does not exist/);
    assert.deepEqual(
      store
        .listSnapshots()
        .map((x) => x.kind)
        .sort(),
      ['pause', 'template'],
    );
    assert.deepEqual(store.openOperations(), []);
  });

  it('a snapshot that fails before its disk froze is undone: no files, source running', async () => {
    const s = await svc.create({ template: 'base' });
    class FreezeFails extends FakeDriver {
      override freezeDisk(): Promise<void> {
        return Promise.reject(new Error('disk said no'));
      }
    }
    const broken = new SandboxService({ ...deps, driver: new FreezeFails(world) });
    await assert.rejects(broken.snapshot(s.id), /disk said no/);
    assert.equal((await driver.status(s.id)).state, 'running', 'the source runs again');
    assert.equal(svc.get(s.id).state, 'running');
    assert.deepEqual(
      store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.deepEqual(store.openOperations(), []);
    const r = await svc.reconcile();
    assert.deepEqual(r.orphanSnapshotDirs, [], 'nothing was left on disk');
  });

  it('a snapshot interrupted after its disk froze is finished at start-up', async () => {
    const s = await svc.create({ template: 'base' });
    class CrashAfterFreeze extends FakeDriver {
      override resume(): Promise<void> {
        return Promise.reject(new Error('daemon killed here'));
      }
    }
    const dying = new SandboxService({ ...deps, driver: new CrashAfterFreeze(world) });
    await assert.rejects(dying.snapshot(s.id, { name: 'late' }), /daemon killed here/);
    assert.equal(store.openOperations().length, 1, 'past the point of no return the op stays open');
    const restarted = new SandboxService({ ...deps, driver: new FakeDriver(world) });
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    const snap = restarted.getSnapshot('late');
    assert.equal(snap.sandboxId, s.id);
    assert.equal(restarted.get(s.id).sourceSnapshotId, snap.id);
    assert.equal((await driver.status(s.id)).state, 'running');
    assert.deepEqual(r.adopted, [s.id]);
    assert.deepEqual(store.openOperations(), []);
    // Restorable like any other.
    const clone = await restarted.restore('late');
    assert.equal(clone.state, 'running');
  });

  it('a crash in the middle of freezing the disk: start-up finishes the freeze and the snapshot', async () => {
    const s = await svc.create({ template: 'base' });
    class DiesInFreeze extends FakeDriver {
      override freezeDisk(): Promise<void> {
        return new Promise(() => undefined); // the daemon is killed here
      }
    }
    const dying = new SandboxService({ ...deps, driver: new DiesInFreeze(world) });
    void dying.snapshot(s.id, { name: 'mid' }).catch(() => undefined);
    for (let i = 0; i < 200 && !store.openOperations()[0]?.steps.some((st) => st.name === 'disk frozen'); i++)
      await new Promise((r) => setTimeout(r, 5));
    assert.equal((await driver.status(s.id)).state, 'paused', 'the source is paused mid-snapshot');
    const restarted = new SandboxService({ ...deps, driver: new FakeDriver(world) });
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    assert.deepEqual(r.stuck, []);
    assert.equal((await driver.status(s.id)).state, 'running', 'the source runs again');
    assert.equal(restarted.get(s.id).sourceSnapshotId, restarted.getSnapshot('mid').id);
    assert.deepEqual(r.orphanSnapshotDirs, []);
    assert.deepEqual(store.openOperations(), []);
  });

  it("owners: what a key makes is its own; kiln and the socket act for the sandbox's key; others cannot restore it", async () => {
    const a = { keyId: 'key-a', admin: false };
    const s = await svc.create({ template: 'base' }, { caller: a });
    assert.equal(s.ownerKeyId, 'key-a');
    assert.equal((await svc.create({ template: 'base' })).ownerKeyId, null, 'the socket: no owner');
    const snap = await svc.snapshot(s.id, { name: 'mine' }, { caller: a });
    assert.equal(snap.ownerKeyId, 'key-a');
    // The reaper's pause and a fork on the socket act for the sandbox's key.
    await svc.pause(s.id);
    assert.equal(store.getSnapshot(svc.get(s.id).sourceSnapshotId ?? '').ownerKeyId, 'key-a');
    await svc.resume(s.id);
    const f = await svc.fork(s.id, { count: 1 });
    const clone = f.results[0];
    assert.ok(clone && 'sandbox' in clone);
    assert.equal(clone.sandbox.ownerKeyId, 'key-a');
    assert.equal(f.snapshot.ownerKeyId, 'key-a');
    for (const ref of ['mine', snap.id])
      await assert.rejects(svc.create({ template: ref }, { caller: { keyId: 'key-b', admin: false } }), {
        code: 'not_found',
        message: `template or snapshot "${ref}" does not exist`,
      });
    const byB = await svc.create({ template: 'base' }, { caller: { keyId: 'key-b', admin: false } });
    assert.equal(byB.ownerKeyId, 'key-b', "kiln's templates are everyone's");
    const byAdmin = await svc.create({ template: 'mine' }, { caller: { keyId: 'key-r', admin: true } });
    assert.equal(byAdmin.ownerKeyId, 'key-r');
  });

  it('journals a pause as snapshot dir, source paused, vm stopped, each reaching the failpoint', async () => {
    const hits: string[] = [];
    const s = await svc.create({ template: 'base' });
    const traced = new SandboxService({ ...deps, failpoint: (kind, step) => hits.push(`${kind}:${step}`) });
    await traced.pause(s.id);
    await traced.resume(s.id);
    assert.deepEqual(hits, ['pause:snapshot dir', 'pause:source paused', 'pause:vm stopped', 'resume:vm']);
  });

  it('a crash after a pause kept the disk but before the VM directory went: start-up removes it, resume works', async () => {
    const s = await svc.create({ template: 'base' });
    await svc.exec(s.id, 'true');
    class DiesInStop extends FakeDriver {
      override async stop(id: string, opts: StopOpts = {}): Promise<void> {
        // QEMU has exited and the overlay is kept as the layer; the daemon dies before cleaning up.
        if (opts.keepOverlayAs) await writeFile(opts.keepOverlayAs, `fake disk of ${id}`);
        this.crash(id);
        return new Promise(() => undefined);
      }
    }
    const dying = new SandboxService({ ...deps, driver: new DiesInStop(world) });
    void dying.pause(s.id).catch(() => undefined);
    for (let i = 0; i < 200 && world.get(s.id)?.info.state !== 'stopped'; i++)
      await new Promise((r) => setTimeout(r, 5));
    assert.equal(world.get(s.id)?.info.state, 'stopped', 'the pause got as far as the kept layer');
    const restarted = new SandboxService({ ...deps, driver: new FakeDriver(world) });
    const r = await restarted.reconcile();
    assert.equal(r.finished.length, 1);
    assert.equal(restarted.get(s.id).state, 'paused');
    assert.deepEqual(await driver.list(), [], 'no VM left behind for the paused sandbox');
    const back = await restarted.resume(s.id);
    assert.equal(back.state, 'running');
  });

  it('start-up removes a stale VM of a paused sandbox even when no pause was in progress', async () => {
    const s = await svc.create({ template: 'base' });
    await svc.pause(s.id);
    // A leftover of an earlier crash: a dead VM under the paused sandbox's id.
    await driver.start(vmSpec(s.id));
    driver.crash(s.id);
    const r = await new SandboxService({ ...deps, driver: new FakeDriver(world) }).reconcile();
    assert.deepEqual(r.adopted, [s.id]);
    assert.deepEqual(await driver.list(), []);
    assert.equal((await svc.resume(s.id)).state, 'running');
  });

  it('import refuses a disk that is not one standalone layer (a backing file would read host files)', async () => {
    const src = join(dir, 'evil');
    await mkdir(src);
    // The driver decides what a standalone layer is (QEMU: vmm/qemu/disk-layers.test.ts); the fake's names its base.
    await writeFile(join(src, 'disk.qcow2'), 'fake layer over /etc/passwd\n');
    for (const [kind, name] of Object.entries(ARCHIVE_FILES))
      if (kind !== 'disk') await writeFile(join(src, name), kind);
    const files = [];
    for (const [kind, name] of Object.entries(ARCHIVE_FILES))
      files.push(await artifact(src, kind as keyof typeof ARCHIVE_FILES, name));
    const manifest: ArchiveManifest = {
      format: ARCHIVE_FORMAT,
      snapshot: {
        id: 'snap-evil',
        name: null,
        memoryMiB: 512,
        vcpus: 1,
        guestToken: null,
        templateName: 'base',
        imageKey: 'img-1',
        createdAt: new Date(now).toISOString(),
      },
      files,
    };
    await writeFile(join(src, MANIFEST), JSON.stringify(manifest));
    await assert.rejects(svc.importSnapshot(packArchive(src)), {
      code: 'invalid_argument',
      message: /must be a standalone disk layer; it sits on \/etc\/passwd/,
    });
    assert.deepEqual(
      store.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.deepEqual(store.openOperations(), []);
    assert.deepEqual(
      (await readdir(join(dir, 'snapshots'))).filter((f) => f.startsWith('.staging')),
      [],
    );
  });
});
