import { FakeDriver, type FakeWorld } from './fake-driver.ts';
import { vmmDriverContract } from './driver.contract.ts';

vmmDriverContract('FakeDriver', () => {
  const world: FakeWorld = new Map();
  const driver = new FakeDriver(world);
  return Promise.resolve({
    driver,
    reattach: () => new FakeDriver(world),
    spec: (id: string) => ({
      id,
      boot: { kernel: '/k/vmlinuz', initrd: '/k/initrd.img', rootfs: '/k/rootfs.ext4' },
      resources: { memoryMiB: 256, vcpus: 1 },
      network: { kind: 'restricted' },
    }),
    bootTimeoutMs: 2000,
    loseDir: (id: string) => {
      driver.loseDir(id);
      return Promise.resolve();
    },
    processAlive: (id: string) => driver.processAlive(id),
    failIo: (errno: string | undefined) => {
      driver.failIo(errno);
    },
    cleanup: async () => {
      for (const id of await driver.list()) await driver.kill(id);
    },
  });
});
