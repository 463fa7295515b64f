/**
 * Addresses of sandbox network slots. Each slot is a /30 of the pool: `.1` is the host end of its
 * veth pair (what the sandbox namespace routes through), `.2` the namespace end (where kilnd
 * reaches the guest's forwarded ports). An instance takes one /22 of the pool (256 slots), the
 * first block, from the one its tag hashes to, that no other interface on the host uses.
 */
import { invalidArgument } from '../core/errors.ts';
import { SLOTS_PER_INSTANCE } from './names.ts';

export function ipv4ToInt(a: string): number {
  const parts = a.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw new TypeError(`"${a}" is not an IPv4 address`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** The network address and prefix length of an IPv4 CIDR pool, checked (a /16 to a /22). */
export function parsePool(name: string, cidr: string): { base: number; bits: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
  const bits = Number(m?.[2]);
  if (!m?.[1] || bits < 8 || bits > 22)
    throw invalidArgument(name, `must be an IPv4 CIDR from /8 to /22 (e.g. 10.231.0.0/16), got "${cidr}"`);
  let base: number;
  try {
    base = ipv4ToInt(m[1]);
  } catch {
    throw invalidArgument(name, `"${m[1]}" is not an IPv4 address`);
  }
  if (base % 2 ** (32 - bits) !== 0)
    throw invalidArgument(name, `${cidr} has host bits set; write its network address`);
  return { base, bits };
}

const BLOCK = SLOTS_PER_INSTANCE * 4;

export interface Block {
  /** The block's first address (as an integer) and its CIDR (`x.y.z.0/22`). */
  base: number;
  cidr: string;
}

/**
 * The instance's block: the one holding its own interfaces' addresses when it has any (a
 * restarted kilnd keeps its slots), else the first block from `start` on that no address of
 * `used` falls in.
 */
export function chooseBlock(
  pool: { base: number; bits: number },
  start: number,
  own: number[],
  used: number[],
): Block {
  const count = 2 ** (32 - pool.bits) / BLOCK;
  const blockOf = (a: number): number => Math.floor((a - pool.base) / BLOCK);
  const inPool = (a: number): boolean => a >= pool.base && a < pool.base + count * BLOCK;
  const mine = own.find(inPool);
  const pick = (b: number): Block => ({
    base: pool.base + b * BLOCK,
    cidr: `${intToIpv4(pool.base + b * BLOCK)}/22`,
  });
  if (mine !== undefined) return pick(blockOf(mine));
  const taken = new Set(used.filter(inPool).map(blockOf));
  for (let i = 0; i < count; i++) {
    const b = (start + i) % count;
    if (!taken.has(b)) return pick(b);
  }
  throw invalidArgument(
    'KILN_NET_POOL',
    `every /22 of the pool is in use on this host; give a larger or other pool`,
  );
}

/** The host and namespace addresses of slot `index` in `block`. */
export function slotAddresses(block: Block, index: number): { host: string; guest: string } {
  const base = block.base + index * 4;
  return { host: intToIpv4(base + 1), guest: intToIpv4(base + 2) };
}
