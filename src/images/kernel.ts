import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import { downloadDeb, type PackageVersion } from './host-apt.ts';

/** The unpacked kernel package: its root (for the modules) and its release (`uname -r`). */
export interface UnpackedKernel {
  root: string;
  release: string;
}

/**
 * Downloads the kernel package into the .deb cache, unpacks it under `workDir/kernel-pkg` and
 * copies its `vmlinuz` to `workDir/vmlinuz`.
 */
export async function unpackKernel(
  kernel: PackageVersion,
  o: { workDir: string; debCacheDir: string; signal?: AbortSignal | undefined },
): Promise<UnpackedKernel> {
  const deb = await downloadDeb(kernel, o.debCacheDir, o.signal);
  const root = join(o.workDir, 'kernel-pkg');
  await run('dpkg-deb', ['-x', deb, root], { failCode: 'image_build_failed', signal: o.signal });
  const boot = await readdir(join(root, 'boot'));
  const vmlinuz = boot.find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new KilnError('image_build_failed', `kernel: ${kernel.pkg} has no /boot/vmlinuz-*`);
  await copyFile(join(root, 'boot', vmlinuz), join(o.workDir, 'vmlinuz'));
  return { root, release: vmlinuz.slice('vmlinuz-'.length) };
}
