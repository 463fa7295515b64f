/**
 * The second half of the `VmmDriver` contract (see driver.contract.ts): capabilities, network
 * endpoints, disk layer operations and restoring from a memory snapshot.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AGENT_PORT } from './driver.ts';
import type { DriverFixture } from './driver.contract.ts';
import { rejectsWith } from './driver.contract.ts';
import { waitForHttp } from './health.ts';

export function diskLayerContract(fixture: () => DriverFixture): void {
  describe('capabilities, endpoints, disk layers, memory snapshots', () => {
    it('says what it can do', () => {
      const caps = fixture().driver.capabilities();
      for (const k of ['memorySnapshots', 'cowRamSharing', 'liveDiskFreeze'] as const)
        assert.equal(typeof caps[k], 'boolean', k);
    });

    it('exposes the agent and the extra guest ports the network attachment asks for', async () => {
      const fx = fixture();
      const spec = fx.spec('contract-n');
      const info = await fx.driver.start({ ...spec, network: { kind: 'restricted', guestPorts: [8080] } });
      try {
        assert.deepEqual(Object.keys(info.endpoints).sort(), [String(AGENT_PORT), '8080'].sort());
        assert.ok((info.endpoints[8080]?.port ?? 0) > 0);
        assert.notDeepEqual(info.endpoints[8080], info.agent);
        assert.deepEqual((await fx.driver.status('contract-n')).endpoints, info.endpoints);
      } finally {
        await fx.driver.kill('contract-n');
      }
    });

    it('frozen layers can be flattened, exported standalone and verified as imports', async () => {
      const fx = fixture();
      const d = fx.driver;
      const disks = d.disks;
      await d.start(fx.spec('contract-d'));
      const dir = await mkdtemp(join(tmpdir(), 'kiln-layers-'));
      try {
        assert.equal(disks.writtenBytes('contract-nope'), 0);
        assert.ok(disks.writtenBytes('contract-d') >= 0);
        await d.pause('contract-d');
        const [l1, l2] = [join(dir, 'l1'), join(dir, 'l2')];
        await d.freezeDisk('contract-d', l1);
        await d.freezeDisk('contract-d', l2);
        // Frozen layers outlive their VM (a snapshot's); a hypervisor may hold locks on them while it runs.
        await d.kill('contract-d');
        const size = disks.virtualSize(l1);
        assert.ok(size > 0);
        assert.equal(disks.virtualSize(l2), size);
        assert.ok(disks.maxWritableBytes(size) >= size);
        // A layer standing on another is not a standalone import.
        await rejectsWith(disks.verifyImported(l2), 'invalid_argument', /standalone/);
        await disks.exportStandalone(l2, join(dir, 'export'));
        await disks.verifyImported(join(dir, 'export'));
        assert.equal(disks.virtualSize(join(dir, 'export')), size);
        await disks.flatten(l2, l1, join(dir, 'flat'));
        assert.equal(disks.virtualSize(join(dir, 'flat')), size);
        await rejectsWith(disks.verifyImported(join(dir, 'flat')), 'invalid_argument', /standalone/);
      } finally {
        await d.kill('contract-d').catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('a VM restored from a memory snapshot over the frozen disk runs and serves its agent', async (t) => {
      const fx = fixture();
      const d = fx.driver;
      const caps = d.capabilities();
      if (!caps.memorySnapshots) {
        t.skip('this driver has no memory snapshots');
        return;
      }
      const dir = await mkdtemp(join(tmpdir(), 'kiln-memsnap-'));
      const ramFile = caps.cowRamSharing ? join(dir, 'memory') : undefined;
      try {
        const src = await d.start({ ...fx.spec('contract-m'), ...(ramFile ? { ramFile } : {}) });
        await waitForHttp(`http://${src.agent.host}:${src.agent.port}/health`, {
          timeoutMs: fx.bootTimeoutMs,
        });
        await d.saveState('contract-m', join(dir, 'state'));
        await d.stop('contract-m', { keepOverlayAs: join(dir, 'disk') });
        const snapshot = { stateFile: join(dir, 'state'), ...(ramFile ? { ramFile } : {}) };
        const info = await d.start({
          ...fx.spec('contract-r'),
          diskLayer: join(dir, 'disk'),
          restore: { snapshot },
        });
        assert.equal(info.state, 'running');
        await waitForHttp(`http://${info.agent.host}:${info.agent.port}/health`, {
          timeoutMs: fx.bootTimeoutMs,
        });
        assert.equal((await d.status('contract-r')).state, 'running');
      } finally {
        await d.kill('contract-m').catch(() => undefined);
        await d.kill('contract-r').catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
}
