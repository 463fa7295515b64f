/**
 * The liveness watcher over the fake driver: VMs that died or vanished, a host error that is not
 * death, guest agents that stop answering, and VMs QEMU stopped (full disk, paused outside kiln).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { SandboxService } from './sandbox-service.ts';
import { NOW, ServiceFixture } from './testing/fixtures.ts';

describe('SandboxService: liveness of VMs and guest agents (fake driver)', () => {
  let fx: ServiceFixture;
  beforeEach(async () => (fx = await ServiceFixture.start({ now: NOW, base: true })));
  afterEach(() => fx.close());

  it("a VM that died by itself is marked dead by the liveness check, with its console's last words", async () => {
    const s = await fx.svc.create({ template: 'base' });
    const panic = 'Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009';
    // As a real panic looks: the cause, the panic line, a long stack dump, and the VM is gone.
    const dump = Array.from({ length: 45 }, (_, i) => `[   12.4]  ? frame_${i}+0x1/0x2`);
    fx.driver.crash(s.id, [
      '[   12.3] Out of memory: Killed process 77 (node)',
      `[   12.4] ${panic}`,
      ...dump,
      '[   12.5] Kernel Offset: 0x37e00000 from 0xffffffff81000000',
    ]);
    assert.deepEqual(await fx.svc.checkLiveness(), [s.id]);
    assert.equal(fx.svc.get(s.id).endReason, `vm exited: ${panic}`);
    const ev = fx.svc.logs(s.id).items.find((e) => e.message === `vm exited: ${panic}`);
    const excerpt = ev?.data?.['console'] as string[];
    assert.equal(excerpt[0], '[   12.3] Out of memory: Killed process 77 (node)', 'what led to the panic');
    assert.equal(excerpt.length, 26, 'the event carries the panic and the start of its dump');
    // Without a panic line, the last line the guest wrote; with an empty console, a bare exit.
    const t = await fx.svc.create({ template: 'base' });
    fx.driver.crash(t.id, ['booted', 'agent: listening']);
    const u = await fx.svc.create({ template: 'base' });
    fx.driver.crash(u.id);
    assert.deepEqual((await fx.svc.checkLiveness()).sort(), [t.id, u.id].sort());
    assert.equal(fx.svc.get(t.id).endReason, "vm exited; the guest's last console line: agent: listening");
    assert.equal(fx.svc.get(u.id).endReason, 'vm exited');
  });

  it('a guest whose kernel panicked but whose VM did not exit is ended with the panic line (silent, or booted again)', async () => {
    fx.svc = new SandboxService({ ...fx.deps, liveness: { probeEveryMs: 1000, failuresToFlag: 2 } });
    const s = await fx.svc.create({ template: 'base' });
    const panic = 'Kernel panic - not syncing: sysrq triggered crash';
    // A reset that hung: the panic is on the console, the agent is silent, QEMU still runs.
    fx.driver.write(s.id, [
      `[   18.7] ${panic}`,
      '[   18.8] Kernel Offset: 0x11600000 from 0xffffffff81000000',
    ]);
    fx.guests.hung = true;
    assert.deepEqual(await fx.svc.checkLiveness(), [s.id], 'at the first failed probe, not after the flag');
    assert.equal(fx.svc.get(s.id).endReason, `vm exited: ${panic}`);
    const ev = fx.svc.logs(s.id).items.find((e) => e.message === `vm exited: ${panic}`);
    assert.ok(ev);
    assert.equal(ev.data?.['note'], 'its VM had not exited: kiln ended it');
    assert.ok((ev.data['console'] as string[]).some((l) => l.includes(panic)));
    assert.equal(fx.driver.processAlive(s.id), false, 'its QEMU was killed');
    // A restart into the same QEMU: the panic, then a new boot whose agent answers.
    fx.guests.hung = false;
    const t = await fx.svc.create({ template: 'base' });
    fx.driver.write(t.id, [
      `[ 9.1] Kernel panic - not syncing: Out of memory`,
      '[ 0.0] Linux version 6.1.0',
      'kiln-init: network up',
    ]);
    fx.now += 1000;
    assert.deepEqual(await fx.svc.checkLiveness(), [t.id]);
    assert.equal(fx.svc.get(t.id).endReason, 'vm exited: Kernel panic - not syncing: Out of memory');
    // A console without a panic is no reason to end anything.
    const u = await fx.svc.create({ template: 'base' });
    fx.driver.write(u.id, ['kiln-agent: clock set', 'Out of memory: Killed process 77 (node)']);
    fx.now += 1000;
    assert.deepEqual(await fx.svc.checkLiveness(), []);
    assert.equal(fx.svc.get(u.id).state, 'running');
  });

  it('a host error reading the VM (EMFILE) is not death: liveness and reconcile leave the sandbox alone', async () => {
    const s = await fx.svc.create({ template: 'base' });
    fx.driver.failIo('EMFILE');
    assert.deepEqual(await fx.svc.checkLiveness(), []);
    assert.deepEqual([fx.svc.get(s.id).state, fx.svc.get(s.id).endReason], ['running', null]);
    const restarted = fx.restarted({ driver: fx.driver });
    const r = await restarted.reconcile().finally(() => {
      fx.driver.failIo(undefined);
    });
    assert.deepEqual([r.unchecked, r.adopted, r.dead], [[s.id], [], []]);
    assert.equal(fx.svc.get(s.id).state, 'running');
    assert.deepEqual(await fx.driver.list(), [s.id], 'its VM was neither killed nor cleaned up');
    assert.deepEqual(await fx.svc.checkLiveness(), []);
    assert.equal((await fx.svc.exec(s.id, 'true')).exitCode, 0);
  });

  it('a VM whose directory vanished is killed (it cannot be re-adopted) and the reason recorded', async () => {
    const a = await fx.svc.create({ template: 'base' });
    const b = await fx.svc.create({ template: 'base' });
    fx.driver.loseDir(a.id);
    assert.deepEqual(await fx.svc.checkLiveness(), [a.id]);
    assert.match(
      fx.svc.get(a.id).endReason ?? '',
      /^vm lost: VM sbx-\w+ has no record but its process \d+ still runs/,
    );
    assert.equal(fx.driver.processAlive(a.id), false, 'its process was killed');
    // At start-up too.
    fx.driver.loseDir(b.id);
    const r = await fx.restarted({ driver: fx.driver }).reconcile();
    assert.deepEqual(r.dead, [b.id]);
    assert.match(
      fx.svc.get(b.id).endReason ?? '',
      /could not be re-adopted without its QMP socket, so it was killed/,
    );
    assert.equal(fx.driver.processAlive(b.id), false);
  });

  it('a guest agent that stops answering is flagged unresponsive; exec fails at once; it clears when it answers', async () => {
    fx.svc = new SandboxService({ ...fx.deps, liveness: { probeEveryMs: 1000, failuresToFlag: 2 } });
    const s = await fx.svc.create({ template: 'base' });
    fx.guests.hung = true;
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null, 'one failed probe is not enough');
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null, 'probes are spaced');
    fx.now += 1000;
    await fx.svc.checkLiveness();
    const c = fx.svc.get(s.id).condition;
    assert.ok(c);
    assert.equal(c.code, 'unresponsive');
    assert.match(c.message, /has not answered \/health 2 times in a row/);
    assert.equal(c.since, new Date(fx.now).toISOString());
    assert.equal(fx.svc.get(s.id).state, 'running', 'the state stays truthful');
    await assert.rejects(fx.svc.exec(s.id, 'true'), {
      code: 'guest_agent_error',
      message: new RegExp(`sandbox ${s.id} is not responding \\(since ${c.since}\\)`),
    });
    await assert.rejects(fx.svc.agent(s.id), { code: 'guest_agent_error' });
    // It answers again: the next call re-probes, clears the mark and goes through.
    fx.guests.hung = false;
    assert.equal((await fx.svc.exec(s.id, 'true')).exitCode, 0);
    assert.equal(fx.svc.get(s.id).condition, null);
    assert.ok(fx.svc.logs(s.id).items.some((e) => e.message.startsWith('sandbox unresponsive no more')));
  });

  it('an answering agent is probed every 30 s (a probe wakes an idle guest), a silent one every 5 s', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const probesOver = async (ms: number, step: number): Promise<number> => {
      const p0 = fx.guests.probes;
      for (let t = 0; t < ms; t += step) {
        fx.now += step;
        await fx.svc.checkLiveness();
      }
      return fx.guests.probes - p0;
    };
    await fx.svc.checkLiveness();
    assert.equal(await probesOver(60_000, 1000), 2, 'two probes a minute while it answers');
    fx.guests.hung = true;
    // The next regular probe fails (30 s on), then every 5 s: the third failure flags it.
    assert.equal(await probesOver(45_000, 1000), 4, 'after a failure, every 5 s');
    assert.equal(fx.svc.get(s.id).condition?.code, 'unresponsive');
    fx.guests.hung = false;
    assert.equal(await probesOver(60_000, 1000), 2, 'one more quick probe clears it; then every 30 s');
    assert.equal(fx.svc.get(s.id).condition, null);
  });

  /**
   * A sandbox whose VM's CPU time the test drives; `probesOver(ms, msPerS)`: the /health probes
   * over `ms` of checks a second apart, the VM using `msPerS` ms of CPU each second.
   */
  const cpuTimedSandbox = async (): Promise<{
    s: { id: string };
    probesOver: (ms: number, msPerS: number) => Promise<number>;
  }> => {
    const s = await fx.svc.create({ template: 'base' });
    const pid = (await fx.driver.status(s.id)).pid;
    let cpu = 1000;
    fx.vmCpuMs.set(pid, cpu);
    const probesOver = async (ms: number, msPerS: number): Promise<number> => {
      const p0 = fx.guests.probes;
      for (let t = 0; t < ms; t += 1000) {
        fx.now += 1000;
        fx.vmCpuMs.set(pid, (cpu += msPerS));
        await fx.svc.checkLiveness();
      }
      return fx.guests.probes - p0;
    };
    return { s, probesOver };
  };

  it('an idle guest (nothing sent to it, its VM under 1% of a core) is probed every 5 min; work in it brings back 30 s', async () => {
    const { s, probesOver } = await cpuTimedSandbox();
    const first = fx.guests.probes;
    await fx.svc.checkLiveness();
    assert.equal(fx.guests.probes - first, 1, 'the first probe is not skipped');
    // Idle: 2 ms of CPU a second (0.2% of a core) is under 1%.
    assert.equal(await probesOver(299_000, 2), 0, 'no probe of an idle guest for 5 min');
    assert.equal(await probesOver(1000, 2), 1, 'one once it is 5 min since the last');
    // The guest works (20 ms a second, 2%): every 30 s.
    assert.equal(await probesOver(60_000, 20), 2, 'a busy guest every 30 s');
    assert.equal(await probesOver(120_000, 2), 0, 'idle again');
    // A burst of work after minutes of idling is not averaged away.
    assert.equal(await probesOver(30_000, 12), 1, 'probed after 30 s at 1.2% of a core');
    assert.equal(await probesOver(60_000, 2), 0);
    // Its console is still read when a probe is skipped: a kernel that panicked (and halted,
    // using no CPU) ends the sandbox at the next check, as before.
    fx.driver.write(s.id, ['[ 77.1] Kernel panic - not syncing: Fatal exception']);
    fx.now += 30_000;
    const probes = fx.guests.probes;
    assert.deepEqual(await fx.svc.checkLiveness(), [s.id]);
    assert.equal(fx.guests.probes, probes, 'found without a probe');
    assert.equal(fx.svc.get(s.id).endReason, 'vm exited: Kernel panic - not syncing: Fatal exception');
  });

  it('an idle guest kiln goes to, or whose agent hangs, is probed as before', async () => {
    const { s, probesOver } = await cpuTimedSandbox();
    await fx.svc.checkLiveness();
    assert.equal(await probesOver(60_000, 2), 0, 'idle');
    // kiln talks to its agent (exec, files, the envd proxy): the next due probe goes.
    await fx.svc.exec(s.id, 'true');
    const before = fx.guests.probes;
    assert.equal(await probesOver(30_000, 2), 1, 'used since its last answer: probed when due');
    assert.equal(fx.guests.probes - before, 1);
    // A hung agent in an idle guest is still found: the probe after use fails, then every 5 s.
    await fx.svc.exec(s.id, 'true');
    fx.guests.hung = true;
    const failing = await probesOver(45_000, 0);
    assert.ok(failing >= 4, `failing probes every 5 s, even with no CPU used (${failing} in 45 s)`);
    assert.equal(fx.svc.get(s.id).condition?.code, 'unresponsive');
    // A VM whose CPU time cannot be read is probed every 30 s.
    fx.guests.hung = false;
    fx.vmCpuMs.clear();
    const p0 = fx.guests.probes;
    for (let t = 0; t < 60_000; t += 1000) {
      fx.now += 1000;
      await fx.svc.checkLiveness();
    }
    assert.equal(fx.guests.probes - p0, 2, 'unreadable CPU: every 30 s');
  });

  it('QEMU stopped the VM on a full disk: disk_full while running, exec fails with no_space, resumed once due', async () => {
    fx.svc = new SandboxService({ ...fx.deps, liveness: { diskRetryEveryMs: 30_000 } });
    const s = await fx.svc.create({ template: 'base' });
    fx.driver.ioError(s.id);
    await fx.svc.checkLiveness();
    const c = fx.svc.get(s.id).condition;
    assert.ok(c);
    assert.equal(c.code, 'disk_full');
    assert.match(c.message, /no space left for this sandbox's disk.*No space left on device.*every 30 s/);
    assert.equal(fx.svc.get(s.id).state, 'running');
    await assert.rejects(fx.svc.exec(s.id, 'true'), {
      code: 'no_space',
      message: /is stopped.*no space left/,
    });
    fx.now += 30_000;
    await fx.svc.checkLiveness(); // kiln retries: `cont`
    assert.equal((await fx.driver.status(s.id)).state, 'running');
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null);
    assert.equal((await fx.svc.exec(s.id, 'true')).exitCode, 0);
    // Another I/O error than a full disk is vm_stopped, and not retried.
    fx.driver.ioError(s.id, false);
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition?.code, 'vm_stopped');
    await assert.rejects(fx.svc.exec(s.id, 'true'), {
      code: 'invalid_state',
      message: /VM is stopped.*Input\/output error/,
    });
    // Paused by kiln, the sandbox has no VM: the mark goes.
    await fx.driver.resume(s.id);
    await fx.svc.pause(s.id);
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null);
  });

  it('a VM paused outside kiln is vm_stopped after two checks (one may be a snapshot in progress)', async () => {
    const s = await fx.svc.create({ template: 'base' });
    await fx.driver.pause(s.id);
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null);
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition?.code, 'vm_stopped');
    await fx.driver.resume(s.id);
    await fx.svc.checkLiveness();
    assert.equal(fx.svc.get(s.id).condition, null);
  });
});
