import { open, readFile, stat } from 'node:fs/promises';

/**
 * The bytes of an empty qcow2 overlay, per backing file. `qemu-img create` writes the same
 * ~192 KiB for every overlay of one backing (the header names the backing and its size; nothing
 * of the overlay's own name or time), and spawning it cost a create 20-35 ms under load
 * (docs/ARCHITECTURE.md, "Creating a sandbox"). So qemu-img makes the first overlay of each
 * backing and later ones are written from its bytes.
 *
 * An entry is keyed by the backing's path, format and identity (device, inode, size, mtime): a
 * backing replaced or rewritten in place gets a fresh qemu-img run. Kept sparse (only the 4 KiB
 * blocks that are not all zero, ~12 KiB an entry) and at most `MAX_ENTRIES`, oldest dropped.
 */
const BLOCK = 4096;
const MAX_ENTRIES = 256;

interface Image {
  length: number;
  blocks: { at: number; data: Buffer }[];
}

export class OverlayCache {
  readonly #images = new Map<string, Image>();

  /** The cache key of `backing` now; undefined when it cannot be read (qemu-img says why). */
  async keyOf(backing: { path: string; format: string }): Promise<string | undefined> {
    try {
      const s = await stat(backing.path, { bigint: true });
      return [backing.path, backing.format, s.dev, s.ino, s.size, s.mtimeNs].join('\0');
    } catch {
      return undefined;
    }
  }

  /** Writes the cached overlay for `key` to `file` (created or truncated); false on a miss. */
  async write(key: string, file: string): Promise<boolean> {
    const img = this.#images.get(key);
    if (!img) return false;
    const fh = await open(file, 'w', 0o644);
    try {
      for (const b of img.blocks) await fh.write(b.data, 0, b.data.length, b.at);
      await fh.truncate(img.length);
    } finally {
      await fh.close();
    }
    return true;
  }

  /** Remembers `file`, an overlay qemu-img just created, as the overlay for `key`. */
  async remember(key: string, file: string): Promise<void> {
    const bytes = await readFile(file);
    const blocks: Image['blocks'] = [];
    for (let at = 0; at < bytes.length; at += BLOCK) {
      const data = bytes.subarray(at, Math.min(at + BLOCK, bytes.length));
      if (data.some((x) => x !== 0)) blocks.push({ at, data: Buffer.from(data) });
    }
    this.#images.set(key, { length: bytes.length, blocks });
    while (this.#images.size > MAX_ENTRIES) {
      const oldest = this.#images.keys().next().value;
      if (oldest === undefined) break;
      this.#images.delete(oldest);
    }
  }
}
