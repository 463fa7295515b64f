/** Test fixtures: hand-made tar archives (hostile ones too: node-tar's writer refuses to make them). */
import { createHash } from 'node:crypto';

export interface TarEntry {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo';
  content?: string;
  linkpath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', dir: '5', fifo: '6' } as const;

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number): void => {
    h.write(s.slice(0, len), off, 'utf8');
  };
  const oct = (n: number, off: number, len: number): void => {
    put(n.toString(8).padStart(len - 1, '0'), off, len - 1);
  };
  const type = e.type ?? 'file';
  put(e.path, 0, 100);
  oct(e.mode ?? (type === 'dir' ? 0o755 : 0o644), 100, 8);
  oct(e.uid ?? 0, 108, 8);
  oct(e.gid ?? 0, 116, 8);
  oct(size, 124, 12);
  oct(1700000000, 136, 12);
  h.write('        ', 148, 'ascii');
  put(TYPEFLAG[type], 156, 1);
  put(e.linkpath ?? '', 157, 100);
  h.write('ustar\u000000', 257, 'binary');
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

/** An uncompressed tar of `entries`, in order. */
export function makeTar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.type === undefined || e.type === 'file' ? (e.content ?? '') : '');
    parts.push(header(e, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const digestOf = (b: Buffer | string): string =>
  `sha256:${createHash('sha256').update(b).digest('hex')}`;
