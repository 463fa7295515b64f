import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { moduleLoadOrder } from './initramfs.ts';
import { defaultImageSpec, validateImageSpec } from './spec.ts';

test('the default spec is valid and carries the packages E2B users expect', () => {
  const s = validateImageSpec(defaultImageSpec());
  for (const p of [
    'bash',
    'coreutils',
    'git',
    'python3',
    'curl',
    'ca-certificates',
    'sudo',
    'iproute2',
    'procps',
  ]) {
    assert.ok(s.packages.includes(p), p);
  }
});

test('bad specs are refused naming the field', () => {
  const bad: [Partial<ReturnType<typeof defaultImageSpec>>, RegExp][] = [
    [{ name: '../etc' }, /image name/],
    [{ name: 'a/b' }, /image name/],
    [{ packages: ['ok', 'rm -rf /'] }, /packages: "rm -rf \/" is not a Debian package name/],
    [{ packages: ['--force-yes'] }, /packages/],
    [{ kernelPackage: 'x;y' }, /packages/],
    [{ modules: ['../x'] }, /modules/],
    [{ rootfsSizeMiB: -5 }, /rootfsSizeMiB/],
    [{ rootfsSizeMiB: 10 ** 9 }, /rootfsSizeMiB/],
  ];
  for (const [o, re] of bad) {
    assert.throws(
      () => validateImageSpec(defaultImageSpec(o)),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'invalid_argument');
        assert.match(e.message, re);
        return true;
      },
    );
  }
});

test('module load order resolves dependencies first and knows built-ins from typos', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-mod-'));
  try {
    await writeFile(
      join(dir, 'modules.dep'),
      [
        'kernel/drivers/virtio/virtio_ring.ko:',
        'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
        'kernel/net/core/failover.ko:',
        'kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
      ].join('\n'),
    );
    await writeFile(join(dir, 'modules.builtin'), 'kernel/fs/ext4/ext4.ko\n');
    const order = (await moduleLoadOrder(dir, ['virtio_mmio', 'virtio_net', 'virtio_rng', 'ext4'])).map(
      (m) => m.name,
    );
    assert.deepEqual(order, [
      'virtio_ring',
      'virtio',
      'virtio_mmio',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio-rng',
    ]);
    await assert.rejects(moduleLoadOrder(dir, ['virtio_nte']), /kernel module "virtio_nte" does not exist/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
