import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** A random lower-case base-36 id with a prefix, e.g. `vm-k3x9...`; safe as a file name. */
export function newId(prefix: string, length = 12): string {
  const bytes = randomBytes(length);
  let s = '';
  for (const b of bytes) s += ALPHABET.charAt(b % ALPHABET.length);
  return `${prefix}-${s}`;
}
