import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** "QFI\xfb": the first four bytes of every qcow2 image. */
const QCOW2_MAGIC = 0x514649fb;

/**
 * The virtual size (bytes the guest sees) of a disk image: a qcow2 header's `size` field
 * (big-endian u64 at offset 24), or the file size of anything else (a raw image). Reads 32 bytes:
 * cheap enough for every admission check. Throws what the fs throws (ENOENT, ...).
 */
export function diskVirtualSize(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(32);
    const n = readSync(fd, head, 0, 32, 0);
    if (n === 32 && head.readUInt32BE(0) === QCOW2_MAGIC) return Number(head.readBigUInt64BE(24));
  } finally {
    closeSync(fd);
  }
  return statSync(path).size;
}

/**
 * The most bytes a qcow2 overlay of a disk of `virtualBytes` can take on the host: every
 * cluster written (the virtual size), plus its L2 tables (8 bytes per 64 KiB cluster), refcount
 * blocks (2 bytes per cluster) and a megabyte for the header, L1 table and rounding.
 */
export function overlayWorstCaseBytes(virtualBytes: number): number {
  const clusters = Math.ceil(virtualBytes / 65_536);
  return virtualBytes + clusters * 10 + 2 ** 20;
}
