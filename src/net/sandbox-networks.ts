/**
 * Sandbox networks of one kilnd: a namespace per VM, isolated from the host and from every other
 * sandbox, with the sandbox's egress rules in nftables (see nft-rules.ts). Slots are made ahead
 * of need (a small pool, refilled in the background, as E2B's orchestrator does) so a create only
 * loads its rules. A released slot is destroyed, never reused. Start-up reconciliation destroys
 * every slot of this instance that no live VM uses (after a crash at any step).
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import { OPEN_NETWORK, type EgressRules } from '../core/network-policy.ts';
import { chooseBlock, ipv4ToInt, parsePool, slotAddresses, type Block } from './addressing.ts';
import {
  SLOTS_PER_INSTANCE,
  hostTable,
  instanceTag,
  slotNames,
  slotOfInterface,
  slotOfNamespace,
} from './names.ts';
import { hostRuleset, namespaceRuleset, type NsRuleContext } from './nft-rules.ts';
import {
  applyNft,
  createSlot,
  destroySlot,
  hostAddresses,
  listKernelObjects,
  nsPath,
  type Slot,
} from './slots.ts';

/**
 * A made-ahead slot is loaded with the rules of a create that names none (the common case; no VM
 * runs in it until claimed), so claiming it for those rules loads nothing: no `nft` run, no
 * address listing. Its list of host addresses is as of when it was made; past this age a claim
 * loads the rules again with the addresses of now (the host table refuses every host address
 * anyway; the namespace's list only makes that refusal immediate).
 */
const PRELOADED_FOR_MS = 60_000;

/**
 * The pool makes the slots acquires took this long after the last acquire, not during the create
 * that took one: making a slot (a namespace, a veth pair, addresses, its nftables table: four
 * `ip`/`nft` processes and the kernel's work) competed on a 2-core host with that create's QEMU
 * restore, which took ~20 ms longer (bench/create). An acquire that finds no ready slot makes
 * one at once, as before.
 */
export const REFILL_AFTER_MS = 1000;

/** A slot made ahead: the script loaded in it, the host addresses it was made with, when. */
interface ReadySlot {
  slot: Slot;
  script: string;
  hostLocal: readonly string[];
  at: number;
}
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
/** Left by the kilnd that turned IP forwarding on, so every instance keeps guarding it. */
const FORWARD_MARK = '/run/kiln-ip-forward-enabled';

export interface SandboxNetworksOpts {
  stateDir: string;
  /** KILN_NET_POOL: the IPv4 block slots are taken from (default 10.231.0.0/16). */
  pool: string;
  /** Slots kept ready (default 2). */
  ready?: number;
  /** How long after the last acquire the ready slots are made again (default {@link REFILL_AFTER_MS}). */
  refillAfterMs?: number;
  /** The resolver guests' DNS goes to (IPv4), if any. */
  dns?: string | undefined;
  alwaysDenied: readonly string[];
  /** kilnd's uid: only it connects to the namespaces' forwarded ports. */
  uid: number;
  log: Logger;
}

/** A slot a live VM runs in, as reconciliation is told of it. */
export interface InUseSlot {
  namespace: string;
  owner: string;
  rules: EgressRules;
}

/** Where a VM of a slot runs and where the host reaches its forwarded ports. */
export interface NetworkSlot {
  /** The namespace's path (`/run/netns/<name>`), for `nsenter --net=`. */
  namespace: string;
  address: string;
}

/** The indexes of instance `tag`'s slots that have a namespace or a host interface now. */
async function slotsOnHost(tag: string): Promise<Set<number>> {
  const k = await listKernelObjects();
  const indexes = new Set<number>();
  for (const i of [
    ...k.namespaces.map((ns) => slotOfNamespace(tag, ns)),
    ...k.interfaces.map((name) => slotOfInterface(tag, name)),
  ])
    if (i !== undefined) indexes.add(i);
  return indexes;
}

export class SandboxNetworks {
  readonly #o: SandboxNetworksOpts;
  readonly #tag: string;
  readonly #block: Block;
  readonly #guardForwarding: boolean;
  readonly #slots = new Map<string, Slot>();
  /** Namespace path -> who holds the slot (a VM id) and the rules loaded in it. */
  readonly #held = new Map<string, { owner: string; rules: EgressRules }>();
  readonly #ready: ReadySlot[] = [];
  readonly #used = new Set<number>();
  #proxy: { http: number; tls: number } | undefined;
  #volumes: readonly number[] | undefined;
  #refilling: Promise<void> | undefined;
  #refillTimer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(o: SandboxNetworksOpts, tag: string, block: Block, guardForwarding: boolean) {
    this.#o = o;
    this.#tag = tag;
    this.#block = block;
    this.#guardForwarding = guardForwarding;
  }

  /**
   * Checks the host can isolate sandboxes (root, `ip`, `nft`, `nsenter`), picks the instance's
   * address block, turns IP forwarding on (guarded) and installs the host table.
   */
  static async open(o: SandboxNetworksOpts): Promise<SandboxNetworks> {
    if (o.uid !== 0)
      throw new KilnError(
        'permission_denied',
        'sandbox network isolation needs root (network namespaces and nftables); run kilnd as root, ' +
          'or set KILN_NETWORK=unisolated to run sandboxes that can reach this host (every create then warns)',
      );
    const pool = parsePool('KILN_NET_POOL', o.pool);
    const tag = instanceTag(o.stateDir);
    const k = await listKernelObjects();
    const own = k.addrs
      .filter((a) => slotOfInterface(tag, a.ifname) !== undefined)
      .map((a) => ipv4ToInt(a.addr));
    const used = k.addrs.map((a) => ipv4ToInt(a.addr));
    const start = parseInt(tag, 16) % (2 ** (32 - pool.bits) / (SLOTS_PER_INSTANCE * 4));
    const block = chooseBlock(pool, start, own, used);
    // The host table goes in before forwarding is turned on: a kilnd stopping meanwhile sees it
    // and leaves forwarding on (it turns it off only when it removes the last kiln table).
    const forwardOff = (await readFile(IP_FORWARD, 'utf8')).trim() !== '1';
    const marked = await readFile(FORWARD_MARK).then(
      () => true,
      () => false,
    );
    const n = new SandboxNetworks(o, tag, block, forwardOff || marked);
    // Slots already on the host (live VMs', or strays) are taken until reconcile decides: a slot
    // made before it (a helper VM of recovery) must not collide with a live VM's.
    for (const i of await slotsOnHost(tag)) n.#used.add(i);
    await n.#applyHost();
    if (forwardOff) {
      await writeFile(FORWARD_MARK, `${new Date().toISOString()}\n`);
      await writeFile(IP_FORWARD, '1\n');
    }
    return n;
  }

  /** The egress proxy's ports (HTTP, TLS) on every slot's host address; reloads the host table. */
  async setProxy(proxy: { http: number; tls: number } | undefined): Promise<void> {
    this.#proxy = proxy;
    await this.#applyHost();
  }

  /**
   * kilnd's volume listeners' ports, by mount index: reloads the host table and every slot's
   * rules (a slot made before would not redirect its guest's mounts).
   */
  async setVolumePorts(ports: readonly number[]): Promise<void> {
    this.#volumes = ports;
    await this.#applyHost();
    for (const s of this.#slots.values())
      await applyNft(
        namespaceRuleset(this.#held.get(nsPath(s.ns))?.rules ?? OPEN_NETWORK.egress, await this.#ctx(s)),
        s.ns,
      );
  }

  /**
   * Who holds the slot whose namespace address is `address` (the source of every connection its
   * guest makes) and the rules loaded in it: what the egress proxy decides by.
   */
  peer(address: string): { owner: string; rules: EgressRules } | undefined {
    for (const s of this.#slots.values()) if (s.nsAddr === address) return this.#held.get(nsPath(s.ns));
    return undefined;
  }

  async #applyHost(): Promise<void> {
    await applyNft(
      hostRuleset({
        table: hostTable(this.#tag),
        tag: this.#tag,
        block: this.#block.cidr,
        uid: this.#o.uid,
        proxy: this.#proxy,
        volumes: this.#volumes,
        guardForwarding: this.#guardForwarding,
      }),
    );
  }

  /** What a slot's rules need; `hostLocal` given (a fresh made-ahead slot's) lists nothing. */
  async #ctx(slot: { hostAddr: string }, hostLocal?: readonly string[]): Promise<NsRuleContext> {
    hostLocal ??= (await hostAddresses()).map((a) => a.addr);
    return {
      hostAddr: slot.hostAddr,
      alwaysDenied: this.#o.alwaysDenied,
      dns: this.#o.dns,
      proxy: this.#proxy,
      volumes: this.#volumes,
      hostLocal,
    };
  }

  #nextIndex(): number {
    for (let i = 0; i < SLOTS_PER_INSTANCE; i++) if (!this.#used.has(i)) return i;
    throw new KilnError('capacity', `all ${SLOTS_PER_INSTANCE} network slots of this kilnd are in use`);
  }

  async #make(): Promise<ReadySlot> {
    const index = this.#nextIndex();
    this.#used.add(index);
    try {
      const addrs = slotAddresses(this.#block, index);
      const ctx = await this.#ctx({ hostAddr: addrs.host });
      const script = namespaceRuleset(OPEN_NETWORK.egress, ctx);
      const slot = await createSlot(this.#tag, index, addrs, script);
      this.#slots.set(nsPath(slot.ns), slot);
      return { slot, script, hostLocal: ctx.hostLocal ?? [], at: Date.now() };
    } catch (e) {
      this.#used.delete(index);
      throw e;
    }
  }

  /**
   * A slot with `rules` loaded, for a new VM (`owner`: its id). The caller releases it (or
   * reconciliation does).
   */
  async acquire(rules: EgressRules, owner: string): Promise<NetworkSlot> {
    const ready = this.#ready.shift() ?? (await this.#make());
    const { slot } = ready;
    this.#refillLater();
    try {
      await this.#load(slot, rules, owner, ready);
    } catch (e) {
      await this.release(nsPath(slot.ns)).catch(() => undefined);
      throw e;
    }
    return { namespace: nsPath(slot.ns), address: slot.nsAddr };
  }

  /** Replaces the rules of the slot at `namespace` atomically (existing connections go on). */
  async apply(namespace: string, rules: EgressRules): Promise<void> {
    const slot = this.#slots.get(namespace);
    const held = this.#held.get(namespace);
    if (!slot || !held)
      throw new KilnError('not_found', `no network namespace ${namespace} in use by this kilnd`);
    await this.#load(slot, rules, held.owner);
  }

  /** Loads `rules` in `slot`, unless it is a fresh made-ahead slot holding exactly their script. */
  async #load(slot: Slot, rules: EgressRules, owner: string, ready?: ReadySlot): Promise<void> {
    const fresh = ready && Date.now() - ready.at < PRELOADED_FOR_MS ? ready : undefined;
    const script = namespaceRuleset(rules, await this.#ctx(slot, fresh?.hostLocal));
    if (script !== fresh?.script) await applyNft(script, slot.ns);
    this.#held.set(nsPath(slot.ns), { owner, rules });
  }

  /** Destroys the slot at `namespace` (gone already is fine). */
  async release(namespace: string): Promise<void> {
    const ns = namespace.slice(namespace.lastIndexOf('/') + 1);
    const index = slotOfNamespace(this.#tag, ns);
    if (index === undefined) return;
    await destroySlot(slotNames(this.#tag, index));
    this.#slots.delete(namespace);
    this.#held.delete(namespace);
    this.#used.delete(index);
  }

  /**
   * Start-up: keeps the slots of `inUse` (live VMs: namespace path, VM id, the rules it should
   * have) and loads their rules again (the proxy's ports and the host's addresses may have
   * changed), destroys every other slot of this instance (namespaces and interfaces, whole or
   * half made), then fills the pool.
   */
  async reconcile(inUse: readonly InUseSlot[]): Promise<{ removed: number }> {
    const keep = new Map(inUse.map((u) => [u.namespace, u]));
    const indexes = await slotsOnHost(this.#tag);
    let removed = 0;
    for (const i of indexes) {
      const names = slotNames(this.#tag, i);
      const live = keep.get(nsPath(names.ns));
      if (live) {
        const a = slotAddresses(this.#block, i);
        const slot: Slot = { ...names, index: i, hostAddr: a.host, nsAddr: a.guest };
        this.#slots.set(nsPath(names.ns), slot);
        this.#used.add(i);
        await this.#load(slot, live.rules, live.owner);
        continue;
      }
      await destroySlot(names);
      this.#slots.delete(nsPath(names.ns));
      this.#held.delete(nsPath(names.ns));
      this.#used.delete(i);
      removed += 1;
    }
    this.#ready.length = 0;
    this.#refill();
    return { removed };
  }

  /** Slots made ahead and not claimed (tests, `kiln doctor`). */
  get readyCount(): number {
    return this.#ready.length;
  }

  /** Waits for the pool to be full, refilling now if a refill is due later (tests, benchmarks). */
  async filled(): Promise<void> {
    if (this.#refillTimer) {
      clearTimeout(this.#refillTimer);
      this.#refillTimer = undefined;
      this.#refill();
    }
    while (this.#refilling) await this.#refilling;
  }

  /** Refills once no acquire came for `refillAfterMs` (each acquire pushes it back). */
  #refillLater(): void {
    if (this.#closed) return;
    clearTimeout(this.#refillTimer);
    this.#refillTimer = setTimeout(() => {
      this.#refillTimer = undefined;
      this.#refill();
    }, this.#o.refillAfterMs ?? REFILL_AFTER_MS);
    this.#refillTimer.unref();
  }

  #refill(): void {
    if (this.#refilling || this.#closed) return;
    this.#refilling = (async () => {
      while (!this.#closed && this.#ready.length < (this.#o.ready ?? 2)) {
        try {
          this.#ready.push(await this.#make());
        } catch (e) {
          this.#o.log.warn({ err: e }, 'cannot make a network slot ahead of need');
          break;
        }
      }
    })().finally(() => {
      this.#refilling = undefined;
    });
  }

  /**
   * Stops refilling and destroys the unclaimed slots. Slots of live VMs stay (VMs outlive
   * kilnd); the host table stays while any exists, else it is removed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#refillTimer);
    this.#refillTimer = undefined;
    await this.filled();
    for (const r of this.#ready.splice(0)) await this.release(nsPath(r.slot.ns));
    if (this.#held.size === 0) await removeHostTable(this.#tag);
  }
}

/**
 * Deletes instance `tag`'s host table; when it was the last kiln host table and kiln turned IP
 * forwarding on (the marker), turns it off again and removes the marker: the host routes as it
 * did before any kilnd ran.
 */
async function removeHostTable(tag: string): Promise<void> {
  await applyNft(`table inet ${hostTable(tag)} {}\ndelete table inet ${hostTable(tag)}\n`);
  const { stdout } = await run('nft', ['list', 'tables'], { failCode: 'driver_error' });
  if (/\bkiln_net_[0-9a-f]{6}\b/.test(stdout)) return;
  if (
    !(await readFile(FORWARD_MARK).then(
      () => true,
      () => false,
    ))
  )
    return;
  await writeFile(IP_FORWARD, '0\n');
  await rm(FORWARD_MARK, { force: true });
}

/**
 * Removes every network object of the kilnd whose state directory is `stateDir`: its slots
 * (namespaces and host interfaces) and its host table. For the end of a test, or a host being
 * cleaned after its kilnd and VMs are gone; never touches another instance's.
 */
export async function purgeNetworks(stateDir: string): Promise<void> {
  const tag = instanceTag(stateDir);
  for (const i of await slotsOnHost(tag)) await destroySlot(slotNames(tag, i));
  await removeHostTable(tag);
}
