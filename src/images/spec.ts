import { invalidArgument } from '../core/errors.ts';
import { validateInt, validateName } from '../core/validate.ts';

/** What a guest image is made of. Everything here except `mirror` is part of the cache key. */
export interface ImageSpec {
  name: string;
  /** Debian release of the root filesystem. */
  suite: 'bookworm';
  /** Debian packages installed into the root filesystem (besides debootstrap's minbase). */
  packages: string[];
  /** Debian package (or meta-package) of the kernel; its modules feed the initramfs. */
  kernelPackage: string;
  /** Kernel modules the initramfs loads, with their dependencies, in dependency order. */
  modules: string[];
  /** Size of the ext4 root filesystem (sparse); the guest's disk. */
  rootfsSizeMiB: number;
  /** Debian mirror; default: the host's apt source, else deb.debian.org. Not part of the key. */
  mirror?: string;
}

/**
 * The packages E2B's base template users expect, plus catatonit (PID 1: reaps orphans; it sleeps
 * until a signal comes, where tini wakes the guest every second). Node is not among them:
 * bookworm's nodejs is 18 (end of life); the image carries kiln's own Node 24 (see build.ts).
 */
export const DEFAULT_PACKAGES = [
  'bash',
  'ca-certificates',
  'coreutils',
  'curl',
  'git',
  'iproute2',
  'netbase',
  'procps',
  'python3',
  // Volumes: the guest mounts each with sshfs (FUSE) over TCP to kilnd's confined sftp-server.
  'fuse3',
  'sshfs',
  'sudo',
  'catatonit',
];

export const DEFAULT_IMAGE_NAME = 'default';

export function defaultImageSpec(overrides: Partial<ImageSpec> = {}): ImageSpec {
  return {
    name: DEFAULT_IMAGE_NAME,
    suite: 'bookworm',
    packages: DEFAULT_PACKAGES,
    kernelPackage: 'linux-image-cloud-amd64',
    modules: ['virtio_mmio', 'virtio_blk', 'virtio_net', 'virtio-rng', 'fuse'],
    rootfsSizeMiB: 2048,
    ...overrides,
  };
}

const PKG_RE = /^[a-z0-9][a-z0-9+.-]+$/;

export function validateImageSpec(spec: ImageSpec): ImageSpec {
  validateName('image name', spec.name);
  const suite: string = spec.suite;
  if (suite !== 'bookworm') throw invalidArgument('suite', `only "bookworm" is supported, got "${suite}"`);
  if (!Array.isArray(spec.packages))
    throw invalidArgument('packages', 'must be a list of Debian package names');
  for (const p of [...spec.packages, spec.kernelPackage]) {
    const v: unknown = p;
    if (typeof v !== 'string' || !PKG_RE.test(v)) {
      throw invalidArgument('packages', `${JSON.stringify(v)} is not a Debian package name`);
    }
  }
  for (const m of spec.modules) {
    if (!/^[a-z0-9_-]+$/.test(m)) throw invalidArgument('modules', `"${m}" is not a kernel module name`);
  }
  validateInt('rootfsSizeMiB', spec.rootfsSizeMiB, 512, 262144);
  return spec;
}
