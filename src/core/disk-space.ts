import { statfsSync } from 'node:fs';

/** Bytes an unprivileged writer may still use on the filesystem of `dir` (statfs f_bavail x f_bsize). */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * True when the filesystem of `dir` has (almost) no room left: less than `slack` bytes, default
 * 1 MiB. For failures that carry no errno, such as a QEMU migration into `exec:cat > FILE` that
 * stopped when the disk filled: kiln then reports `no_space` instead of a vague driver error.
 */
export function diskFull(dir: string, slack = 2 ** 20): boolean {
  try {
    return freeBytes(dir) < slack;
  } catch {
    return false;
  }
}
