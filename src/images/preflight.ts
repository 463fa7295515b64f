import { existsSync } from 'node:fs';
import { mkdir, statfs } from 'node:fs/promises';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';

const TOOLS = [
  'debootstrap',
  'mkfs.ext4',
  'cpio',
  'gzip',
  'apt-get',
  'apt-cache',
  'dpkg-deb',
  'chroot',
  'du',
  'depmod',
];
/** The static busybox that becomes the initramfs's shell and tools. */
export const BUSYBOX = '/bin/busybox';
const MIN_FREE_MIB = 3072;

/** Checks what a build needs before it starts: root, the host tools, and free space in the cache. */
export async function preflight(cacheDir: string): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new KilnError(
      'permission_denied',
      'building an image needs root (debootstrap and chroot); run as root',
    );
  }
  const missing: string[] = [];
  for (const t of TOOLS) {
    const found = await run('sh', ['-c', 'command -v "$1"', 'sh', t]).then(
      () => true,
      () => false,
    );
    if (!found) missing.push(t);
  }
  if (!existsSync(BUSYBOX)) missing.push('busybox (static)');
  if (missing.length > 0) {
    throw new KilnError(
      'missing_tool',
      `missing host tools: ${missing.join(', ')} (./kiln installs them when run as root)`,
      {
        details: { tools: missing },
      },
    );
  }
  await mkdir(cacheDir, { recursive: true });
  const fs = await statfs(cacheDir);
  const freeMiB = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
  if (freeMiB < MIN_FREE_MIB) {
    throw new KilnError(
      'no_space',
      `only ${freeMiB} MiB free in ${cacheDir}; an image build needs ${MIN_FREE_MIB} MiB`,
    );
  }
}
