/**
 * Guest images staged by hand in a cache dir, as `kiln image build` leaves them (the files, the
 * manifest last, a name pointing at the key), for unit tests of what lists them. Test code only.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImageManifest } from '../../images/registry.ts';
import { DEFAULT_PACKAGES } from '../../images/spec.ts';

/** Writes image `key` under `<cacheDir>/images` (complete unless `incomplete`); `name` points at it. */
export async function stageImage(
  cacheDir: string,
  key: string,
  o: {
    name?: string;
    createdAt?: string;
    oci?: { reference: string; digest: string };
    incomplete?: boolean;
  } = {},
): Promise<void> {
  const root = join(cacheDir, 'images');
  const dir = join(root, key);
  await mkdir(dir, { recursive: true });
  const files = { kernel: 'vmlinuz', initrd: 'initrd.img', rootfs: 'rootfs.ext4' } as const;
  for (const f of Object.values(files)) await writeFile(join(dir, f), `${f} of ${key}\n`);
  if (o.incomplete) return;
  const fact = (f: string) => ({ path: f, size: `${f} of ${key}\n`.length, sha256: '0'.repeat(64) });
  const m: ImageManifest = {
    name: o.name ?? key,
    key,
    builderVersion: 1,
    createdAt: o.createdAt ?? '2026-06-01T00:00:00.000Z',
    kernel: { package: 'linux-image-cloud-amd64', version: '6.1', release: '6.1.0-test-amd64' },
    spec: {
      name: o.name ?? key,
      suite: 'bookworm',
      packages: DEFAULT_PACKAGES,
      kernelPackage: 'linux-image-cloud-amd64',
      modules: [],
      rootfsSizeMiB: 2048,
    },
    files: { kernel: fact(files.kernel), initrd: fact(files.initrd), rootfs: fact(files.rootfs) },
    ...(o.oci
      ? {
          oci: {
            ...o.oci,
            config: {
              env: [],
              workdir: undefined,
              user: undefined,
              entrypoint: undefined,
              cmd: undefined,
              diffIds: [],
            },
          },
        }
      : {}),
  };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(m));
  if (o.name) {
    await mkdir(join(root, 'by-name'), { recursive: true });
    await writeFile(join(root, 'by-name', `${o.name}.json`), JSON.stringify({ name: o.name, key }));
  }
}
