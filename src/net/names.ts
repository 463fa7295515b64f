/**
 * Names of the kernel objects one kilnd makes for sandbox networks. Everything carries the
 * instance's tag (a short hash of its state directory), so two kilnds on one host (two test
 * runs, a user's own) never list, flush or delete each other's; every kiln host interface starts
 * with `kn`, so one nftables pattern (`kn*`) covers the sandboxes of all instances.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';

/** The prefix of every kiln host-side veth interface (of any instance). */
export const HOST_IF_PREFIX = 'kn';
/** The table inside each sandbox namespace (one per namespace, so one fixed name). */
export const NS_TABLE = 'kiln';
/** Slots per instance: its address block is a /22 of /30s. */
export const SLOTS_PER_INSTANCE = 256;

/** The instance tag of the kilnd whose state directory is `stateDir`: 6 hex digits. */
export function instanceTag(stateDir: string): string {
  return createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 6);
}

/** The host-wide nftables table of instance `tag` (input/forward guards, NAT, agent guard). */
export function hostTable(tag: string): string {
  return `kiln_net_${tag}`;
}

export interface SlotNames {
  /** The network namespace (a file under /run/netns). */
  ns: string;
  /** The host end of the veth pair (<= 15 bytes: `kn` + 6 hex + up to 3 digits). */
  hostIf: string;
}

export function slotNames(tag: string, index: number): SlotNames {
  return { ns: `kiln-${tag}-${index}`, hostIf: `${HOST_IF_PREFIX}${tag}${index}` };
}

/** The slot index a namespace name of instance `tag` carries, or undefined for other names. */
export function slotOfNamespace(tag: string, ns: string): number | undefined {
  const m = new RegExp(`^kiln-${tag}-(\\d{1,3})$`).exec(ns);
  const n = m?.[1] === undefined ? NaN : Number(m[1]);
  return Number.isInteger(n) && n < SLOTS_PER_INSTANCE ? n : undefined;
}

/** The slot index a host interface name of instance `tag` carries, or undefined. */
export function slotOfInterface(tag: string, name: string): number | undefined {
  const m = new RegExp(`^${HOST_IF_PREFIX}${tag}(\\d{1,3})$`).exec(name);
  const n = m?.[1] === undefined ? NaN : Number(m[1]);
  return Number.isInteger(n) && n < SLOTS_PER_INSTANCE ? n : undefined;
}
