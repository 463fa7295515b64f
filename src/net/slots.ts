/**
 * Kernel objects of one sandbox network slot: a network namespace, a veth pair (host end
 * `kn<tag><n>`, namespace end `eth0`), a /30 between them, a default route to the host, and the
 * namespace's nftables table. Made with iproute2 (`ip`) and nftables (`nft`, run inside the
 * namespace with util-linux `nsenter`), Debian's own tools. Every step is undone on failure, and
 * `destroySlot` removes whatever part exists.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import { slotNames, type SlotNames } from './names.ts';

export const NETNS_DIR = '/run/netns';

export interface Slot extends SlotNames {
  index: number;
  /** The host end's address (the namespace's gateway) and the namespace end's. */
  hostAddr: string;
  nsAddr: string;
}

/** The path QEMU is started in (`nsenter --net=<path>`). */
export const nsPath = (ns: string): string => `${NETNS_DIR}/${ns}`;

async function ip(args: string[], input?: string): Promise<void> {
  await run('ip', args, { failCode: 'driver_error', ...(input === undefined ? {} : { input }) });
}

/** Runs `nft -f -` with `script`, inside namespace `ns` when given. */
export async function applyNft(script: string, ns?: string): Promise<void> {
  const [cmd, args] = ns ? ['nsenter', [`--net=${nsPath(ns)}`, 'nft', '-f', '-']] : ['nft', ['-f', '-']];
  await run(cmd, args, { input: script, failCode: 'driver_error' });
}

/** Whether host interface `name` exists now. */
async function linkExists(name: string): Promise<boolean> {
  const all = await run('ip', ['-j', 'link', 'show'], { failCode: 'driver_error' });
  return (JSON.parse(all.stdout || '[]') as { ifname: string }[]).some((l) => l.ifname === name);
}

/** Makes slot `index` of instance `tag` with its rules (`script`); on failure nothing is left. */
export async function createSlot(
  tag: string,
  index: number,
  addrs: { host: string; guest: string },
  script: string,
): Promise<Slot> {
  const names = slotNames(tag, index);
  const slot: Slot = { ...names, index, hostAddr: addrs.host, nsAddr: addrs.guest };
  // Never someone else's: a namespace of this name that exists already is not removed.
  await ip(['netns', 'add', names.ns]).catch((e: unknown) => {
    throw new KilnError(
      'driver_error',
      `cannot make network namespace ${names.ns}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  });
  try {
    await ip(
      ['-batch', '-'],
      [
        `link add ${names.hostIf} type veth peer name eth0 netns ${names.ns}`,
        `addr add ${addrs.host}/30 dev ${names.hostIf}`,
        `link set ${names.hostIf} up`,
        '',
      ].join('\n'),
    );
    await ip(
      ['-n', names.ns, '-batch', '-'],
      [
        `addr add ${addrs.guest}/30 dev eth0`,
        'link set eth0 up',
        'link set lo up',
        `route add default via ${addrs.host}`,
        '',
      ].join('\n'),
    );
    await applyNft(script, names.ns);
    return slot;
  } catch (e) {
    await destroySlot(names).catch(() => undefined);
    throw new KilnError(
      'driver_error',
      `cannot make network namespace ${names.ns}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
}

/**
 * Removes a slot's veth pair and namespace. Idempotent: a part already gone, or removed by
 * somebody else while this runs (the kernel tears a deleted namespace's veth down on its own
 * time), is fine. A failed delete counts only if the part is still there afterwards, whatever
 * `ip` printed.
 */
export async function destroySlot(names: SlotNames): Promise<void> {
  await ip(['link', 'del', names.hostIf]).catch(async (e: unknown) => {
    if (await linkExists(names.hostIf)) throw e;
  });
  await ip(['netns', 'del', names.ns]).catch((e: unknown) => {
    if (existsSync(nsPath(names.ns))) throw e;
  });
}

/** The host's IPv4 addresses now, with their interfaces (one `ip` run). */
export async function hostAddresses(): Promise<{ ifname: string; addr: string }[]> {
  const out = await run('ip', ['-j', '-4', 'addr', 'show'], { failCode: 'driver_error' });
  const links = JSON.parse(out.stdout || '[]') as { ifname: string; addr_info?: { local?: string }[] }[];
  return links.flatMap((l) =>
    (l.addr_info ?? []).flatMap((a) => (a.local ? [{ ifname: l.ifname, addr: a.local }] : [])),
  );
}

/** Names of the namespaces under /run/netns and of the host's interfaces. */
export async function listKernelObjects(): Promise<{
  namespaces: string[];
  interfaces: string[];
  addrs: { ifname: string; addr: string }[];
}> {
  const namespaces = await readdir(NETNS_DIR).catch(() => [] as string[]);
  const addrs = await hostAddresses();
  const all = await run('ip', ['-j', 'link', 'show'], { failCode: 'driver_error' });
  const interfaces = (JSON.parse(all.stdout || '[]') as { ifname: string }[]).map((l) => l.ifname);
  return { namespaces, interfaces, addrs };
}
