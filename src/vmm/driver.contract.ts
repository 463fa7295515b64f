/**
 * The behaviour every `VmmDriver` must show, run against each implementation: the fake (unit
 * tests) and QEMU (integration tests, real guests). A new driver passes this before it is used.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, before, after } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { waitForHttp } from './health.ts';
import { AGENT_PORT, LEGACY_MACHINE, MACHINE_REVISION, type VmmDriver, type VmSpec } from './driver.ts';
import { diskLayerContract } from './driver-disk.contract.ts';

export interface DriverFixture {
  /** A driver bound to the fixture's runtime directory. */
  driver: VmmDriver;
  /** A second, independent driver instance on the same state (models a restarted daemon). */
  reattach: () => VmmDriver;
  /** A valid spec for a VM with this id. */
  spec: (id: string) => VmSpec;
  /** How long a guest may take to answer /health. */
  bootTimeoutMs: number;
  /** Removes the VM's runtime directory behind the driver's back (its process runs on). */
  loseDir: (id: string) => Promise<void>;
  /** Whether the VM's process (pid) still exists, asked of the OS (or the fake's world). */
  processAlive: (id: string, pid: number) => boolean;
  /** Makes the driver's host reads fail with `errno` (e.g. EMFILE) until called with undefined. */
  failIo: (errno: string | undefined) => void;
  cleanup: () => Promise<void>;
}

export async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KilnError, `expected a KilnError, got ${String(e)}`);
    assert.equal(e.code, code, `expected code ${code}, got ${e.code}: ${e.message}`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

export function vmmDriverContract(name: string, make: () => Promise<DriverFixture>): void {
  describe(`VmmDriver contract: ${name}`, () => {
    let fx: DriverFixture;
    before(async () => {
      fx = await make();
    });
    after(async () => {
      await fx.cleanup();
    });

    it('rejects bad specs before starting anything', async () => {
      const d = fx.driver;
      const before = await d.list();
      await rejectsWith(d.start({ ...fx.spec('ok'), id: '../escape' }), 'invalid_argument', /id/);
      await rejectsWith(d.start({ ...fx.spec('ok'), id: 'a/b' }), 'invalid_argument', /id/);
      await rejectsWith(d.start(fx.spec('x'.repeat(200))), 'invalid_argument', /id/);
      const res = (id: string, r: Partial<VmSpec['resources']>): VmSpec => {
        const spec = fx.spec(id);
        return { ...spec, resources: { ...spec.resources, ...r } };
      };
      const boot = (id: string, b: Partial<VmSpec['boot']>): VmSpec => {
        const spec = fx.spec(id);
        return { ...spec, boot: { ...spec.boot, ...b } };
      };
      await rejectsWith(d.start(res('mem', { memoryMiB: -1 })), 'invalid_argument', /memoryMiB/);
      await rejectsWith(d.start(res('mem', { memoryMiB: 10_000_000 })), 'invalid_argument', /memoryMiB/);
      await rejectsWith(d.start(res('cpu', { vcpus: 0 })), 'invalid_argument', /vcpus/);
      await rejectsWith(d.start(res('cpu', { vcpus: 4096 })), 'invalid_argument', /vcpus/);
      await rejectsWith(d.start(res('cpu', { vcpus: 1.5 })), 'invalid_argument', /vcpus/);
      await rejectsWith(
        d.start(boot('k', { kernel: '/nonexistent/missing-vmlinuz' })),
        'not_found',
        /kernel/,
      );
      await rejectsWith(d.start(boot('k', { kernel: 'relative/vmlinuz' })), 'invalid_argument', /kernel/);
      await rejectsWith(
        d.start({ ...fx.spec('r'), restore: { snapshot: { stateFile: 'relative/state' } } }),
        'invalid_argument',
        /stateFile/,
      );
      assert.deepEqual(await d.list(), before, 'nothing was created');
    });

    it('answers not_found for unknown ids', async () => {
      const d = fx.driver;
      await rejectsWith(d.status('nope'), 'not_found');
      await rejectsWith(d.pause('nope'), 'not_found');
      await rejectsWith(d.resume('nope'), 'not_found');
      await rejectsWith(d.stop('nope'), 'not_found');
      await rejectsWith(d.kill('nope'), 'not_found');
      await rejectsWith(d.status('../etc'), 'invalid_argument');
    });

    describe('a started VM', () => {
      const id = 'contract-a';
      before(async () => {
        const info = await fx.driver.start(fx.spec(id));
        assert.equal(info.id, id);
        assert.equal(info.state, 'running');
        assert.ok(info.pid > 0);
      });

      it('serves its guest agent on its agent endpoint', async () => {
        const info = await fx.driver.status(id);
        assert.ok(info.agent.port > 0, `agent endpoint: ${JSON.stringify(info.agent)}`);
        assert.deepEqual(info.endpoints[AGENT_PORT], info.agent);
        await waitForHttp(`http://${info.agent.host}:${info.agent.port}/health`, {
          timeoutMs: fx.bootTimeoutMs,
        });
        assert.deepEqual(await fx.driver.list(), [id]);
      });

      it('refuses a second VM with the same id and leaves the first alone', async () => {
        const pid = (await fx.driver.status(id)).pid;
        await rejectsWith(fx.driver.start(fx.spec(id)), 'already_exists');
        const after = await fx.driver.status(id);
        assert.equal(after.state, 'running');
        assert.equal(after.pid, pid);
      });

      it('pauses and resumes, only from the legal states', async () => {
        const d = fx.driver;
        await rejectsWith(d.resume(id), 'invalid_state', /running/);
        await d.pause(id);
        assert.equal((await d.status(id)).state, 'paused');
        await rejectsWith(d.pause(id), 'invalid_state', /paused/);
        await d.resume(id);
        assert.equal((await d.status(id)).state, 'running');
      });

      it('exposes a guest port on the agent host, once, while running or paused; refuses the agent port', async () => {
        const d = fx.driver;
        const info = await d.status(id);
        const ep = await d.exposePort(id, 8000);
        assert.equal(ep.host, info.agent.host, 'published on the host address of the agent forward');
        assert.ok(ep.port > 0 && ep.port !== info.agent.port, JSON.stringify(ep));
        assert.deepEqual(await d.exposePort(id, 8000), ep, 'a second call answers the same endpoint');
        const [a, b] = await Promise.all([d.exposePort(id, 8001), d.exposePort(id, 8001)]);
        assert.deepEqual(a, b, 'concurrent calls make one forward');
        await d.pause(id);
        try {
          assert.deepEqual(await d.exposePort(id, 8000), ep);
          const p = await d.exposePort(id, 8002);
          assert.ok(p.port > 0 && p.port !== ep.port);
        } finally {
          await d.resume(id);
        }
        await rejectsWith(d.exposePort(id, AGENT_PORT), 'invalid_argument', /port.*guest agent/);
        for (const bad of [0, 65536, 1.5, -80])
          await rejectsWith(d.exposePort(id, bad), 'invalid_argument', /port/);
        await rejectsWith(d.exposePort('nope', 8000), 'not_found');
      });

      it('is seen by a re-attaching driver (after the first closed), which can stop it', async () => {
        const first = await fx.driver.status(id);
        const published = await fx.driver.exposePort(id, 8000);
        // Models a daemon restart: the old process's handles are gone, the VM keeps running.
        await fx.driver.close();
        const d2 = fx.reattach();
        const seen = await d2.status(id);
        assert.equal(seen.pid, first.pid);
        assert.equal(seen.state, 'running');
        assert.deepEqual(seen.agent, first.agent);
        assert.deepEqual(seen.endpoints, first.endpoints);
        assert.deepEqual(await d2.exposePort(id, 8000), published, 'it finds the forward the VM has');
        await d2.stop(id);
        await d2.close();
        await rejectsWith(fx.driver.status(id), 'not_found');
        assert.deepEqual(await fx.driver.list(), []);
      });
    });

    it('saveState writes a state file and leaves the VM paused; resume continues it', async () => {
      const d = fx.driver;
      await d.start(fx.spec('contract-s'));
      const dir = await mkdtemp(join(tmpdir(), 'kiln-save-'));
      try {
        const r = await d.saveState('contract-s', join(dir, 'state'));
        assert.ok(r.bytes > 0 && (await stat(join(dir, 'state'))).size === r.bytes);
        assert.equal((await d.status('contract-s')).state, 'paused');
        await d.resume('contract-s');
        assert.equal((await d.status('contract-s')).state, 'running');
        await rejectsWith(d.saveState('nope', join(dir, 'x')), 'not_found');
      } finally {
        await d.kill('contract-s');
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('a VM runs as the machine it is given; its saved state restores on that machine only', async () => {
      const d = fx.driver;
      await rejectsWith(d.start({ ...fx.spec('contract-m0'), machine: 0 }), 'invalid_argument', /machine/);
      assert.equal(
        (await d.start(fx.spec('contract-mn'))).machine,
        MACHINE_REVISION,
        'the newest by default',
      );
      await d.kill('contract-mn');
      const legacy = { ...fx.spec('contract-m'), machine: LEGACY_MACHINE };
      assert.equal((await d.start(legacy)).machine, LEGACY_MACHINE);
      const dir = await mkdtemp(join(tmpdir(), 'kiln-machine-'));
      try {
        await d.saveState('contract-m', join(dir, 'state'));
        await d.kill('contract-m');
        const restore = { snapshot: { stateFile: join(dir, 'state') } };
        // Another machine's devices do not take that state: refused, nothing left running.
        await assert.rejects(d.start({ ...legacy, machine: MACHINE_REVISION, restore }));
        assert.deepEqual(await d.list(), []);
        const back = await d.start({ ...legacy, restore });
        assert.equal(back.machine, LEGACY_MACHINE);
        assert.equal((await d.status('contract-m')).state, 'running');
      } finally {
        await d.kill('contract-m').catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('freezeDisk moves the overlay to a layer and the VM goes on over a new overlay', async () => {
      const d = fx.driver;
      const info = await d.start(fx.spec('contract-f'));
      const dir = await mkdtemp(join(tmpdir(), 'kiln-freeze-'));
      try {
        await rejectsWith(d.freezeDisk('contract-f', join(dir, 'layer')), 'invalid_state', /needs paused/);
        await d.pause('contract-f');
        await d.freezeDisk('contract-f', join(dir, 'layer'));
        assert.ok((await stat(join(dir, 'layer'))).size > 0);
        const after = await d.status('contract-f');
        assert.notEqual(after.overlay, info.overlay);
        // Repeating it (as start-up does after a crash) finds it done; another existing path is refused.
        await d.freezeDisk('contract-f', join(dir, 'layer'));
        assert.equal((await d.status('contract-f')).overlay, after.overlay);
        await writeFile(join(dir, 'taken'), 'x');
        await rejectsWith(d.freezeDisk('contract-f', join(dir, 'taken')), 'already_exists');
        assert.equal((await d.status('contract-f')).overlay, after.overlay);
        await d.resume('contract-f');
        await waitForHttp(`http://${after.agent.host}:${after.agent.port}/health`, {
          timeoutMs: fx.bootTimeoutMs,
        });
        assert.equal((await d.status('contract-f')).state, 'running');
      } finally {
        await d.kill('contract-f');
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('a host read error (EMFILE) is an error: the VM is neither stopped nor forgotten', async () => {
      const d = fx.driver;
      const info = await d.start(fx.spec('contract-io'));
      fx.failIo('EMFILE');
      try {
        await rejectsWith(d.status('contract-io'), 'driver_error', /EMFILE/);
        await rejectsWith(d.kill('contract-io'), 'driver_error', /EMFILE/);
        await rejectsWith(d.stop('contract-io'), 'driver_error', /EMFILE/);
        await rejectsWith(d.list(), 'driver_error', /EMFILE/);
      } finally {
        fx.failIo(undefined);
      }
      assert.equal(fx.processAlive('contract-io', info.pid), true, 'the VM still runs');
      const after = await d.status('contract-io');
      assert.deepEqual([after.state, after.pid], ['running', info.pid]);
      await d.kill('contract-io');
      assert.equal(fx.processAlive('contract-io', info.pid), false);
    });

    it('a VM whose directory vanished stays listed, is not_found, and kill ends its process', async () => {
      const d = fx.driver;
      const info = await d.start(fx.spec('contract-l'));
      await fx.loseDir('contract-l');
      assert.deepEqual(await d.list(), ['contract-l']);
      await rejectsWith(d.status('contract-l'), 'not_found', new RegExp(`${info.pid}.*still runs`));
      assert.equal(fx.processAlive('contract-l', info.pid), true);
      await d.kill('contract-l');
      assert.equal(fx.processAlive('contract-l', info.pid), false, 'its process was killed');
      assert.deepEqual(await d.list(), []);
      await rejectsWith(d.kill('contract-l'), 'not_found');
    });

    diskLayerContract(() => fx);

    it('kill ends a VM in any state and forgets it', async () => {
      const d = fx.driver;
      await d.start(fx.spec('contract-b'));
      await d.pause('contract-b');
      await d.kill('contract-b');
      await rejectsWith(d.status('contract-b'), 'not_found');
      assert.deepEqual(await d.list(), []);
    });
  });
}
