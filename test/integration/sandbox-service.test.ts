/**
 * SandboxService on real QEMU guests: a template built from the default image, sandboxes
 * restored from it, commands through the guest agent, a daemon "restart" that re-adopts running
 * sandboxes, a VM killed from outside, and kills that leave no VM behind.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import type { SandboxService } from '../../src/daemon/sandbox-service.ts';
import { realHost, type RealHost } from '../helpers/service.ts';

describe('SandboxService with real guests', { timeout: 900_000 }, () => {
  let host: RealHost;
  let svc: SandboxService;
  before(async () => {
    host = await realHost({ prefix: 'kiln-svc-' });
    svc = host.service();
  });
  after(() => host.close());

  it('builds a template snapshot from the image', async () => {
    const tpl = await svc.buildTemplate('base', host.image, { memoryMiB: 512, vcpus: 1 });
    assert.ok(tpl.snapshotId);
    assert.deepEqual(await host.driver.list(), [], 'the template VM is gone');
  });

  let a = '';
  let b = '';
  it('creates two sandboxes at once; commands run in each as user with the env asked for', async () => {
    const [sa, sb] = await Promise.all([
      svc.create({ template: 'base', envVars: { WHO: 'a' } }),
      svc.create({ template: 'base', envVars: { WHO: 'b' } }),
    ]);
    a = sa.id;
    b = sb.id;
    assert.equal((await svc.exec(a, 'echo "$WHO"; whoami')).stdout, 'a\nuser\n');
    assert.equal((await svc.exec(b, 'echo "$WHO"; whoami')).stdout, 'b\nuser\n');
    const r = await svc.exec(a, 'exit 7');
    assert.equal(r.exitCode, 7);
    // Stats: sampled in the background; the API answers with the latest sample.
    await svc.sampleAll();
    const s1 = await svc.stats(a);
    assert.ok(s1.rssBytes > 50 * 2 ** 20 && s1.pssBytes > 0 && s1.diskBytes > 0, JSON.stringify(s1));
    assert.ok(s1.cpuPct >= 0);
    assert.equal((await svc.stats(a)).at, s1.at, 'a recent background sample is reused');
  });

  it("an idle guest's PID 1 sleeps until a signal comes (no timer of its own wakes the VM)", async () => {
    // Under TCG every guest wake-up costs its QEMU CPU: tini, the init before catatonit, woke
    // once a second to poll for orphans. PID 1's context switches over 5 s of nothing: none.
    const r = await svc.exec(
      a,
      'cat /proc/1/comm; s() { sed -n "s/^voluntary_ctxt_switches:\\s*//p" /proc/1/status; }; s; sleep 5; s',
      { user: 'root' },
    );
    const [comm, before, after] = r.stdout.trim().split('\n');
    assert.equal(comm, 'catatonit', r.stdout);
    assert.equal(
      Number(after) - Number(before),
      0,
      `PID 1 woke ${Number(after) - Number(before)} times in 5 s`,
    );
  });

  it('under TCG a guest lays out every process at the same addresses (its translated code is reused)', async () => {
    const accel = (await host.driver.status(a)).accel;
    const r = await svc.exec(
      a,
      'cat /proc/sys/kernel/randomize_va_space; grep -m1 libc /proc/self/maps; grep -m1 libc /proc/self/maps',
    );
    const [aslr, map1, map2] = r.stdout.trim().split('\n');
    assert.equal(aslr, accel === 'tcg' ? '0' : '2', r.stdout);
    if (accel === 'tcg')
      assert.equal(map1?.split(' ')[0], map2?.split(' ')[0], 'libc at the same address in two processes');
  });

  it('a restarted daemon re-adopts running sandboxes', async () => {
    // What a kill -9 leaves: no in-memory state, VMs still running. A new driver and service.
    await host.reattach();
    svc = host.service();
    const r = await svc.reconcile();
    assert.deepEqual(r.adopted.sort(), [a, b].sort());
    assert.deepEqual(r.dead, []);
    assert.equal((await svc.exec(a, 'echo still')).stdout, 'still\n');
  });

  it('a VM killed from outside is marked dead within 2 s and cleaned up', async () => {
    const pid = (await host.driver.status(b)).pid;
    svc.startBackground({ livenessEveryMs: 250, reapEveryMs: 1000 });
    try {
      process.kill(pid, 'SIGKILL');
      const t0 = Date.now();
      while (svc.get(b).state !== 'dead') {
        assert.ok(Date.now() - t0 < 2000, 'seen dead within 2 s');
        await sleep(50);
      }
      // Killed from outside: no panic; the reason carries the guest's last console line.
      assert.match(svc.get(b).endReason ?? '', /^vm exited(; the guest's last console line: .+)?$/);
    } finally {
      svc.stopBackground();
    }
    assert.ok(!(await host.driver.list()).includes(b));
  });

  it('kill ends the sandbox and its VM', async () => {
    const pid = (await host.driver.status(a)).pid;
    await svc.kill(a);
    assert.equal(svc.get(a).state, 'dead');
    assert.equal(pidAlive(pid), false);
    assert.deepEqual(await host.driver.list(), []);
    assert.deepEqual(host.store.openOperations(), []);
  });
});
