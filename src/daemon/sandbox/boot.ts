import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactRecord, SnapshotRecord } from '../../core/domain.ts';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../../core/envd-auth.ts';
import type { EgressRules } from '../../core/network-policy.ts';
import { KilnError } from '../../core/errors.ts';
import type { VmSpec } from '../../vmm/driver.ts';
import { CONSOLE_LINES } from '../console.ts';
import type { GuestClient } from '../guest-client.ts';
import { waitGuestReady } from '../guest-ready.ts';
import type { OpRun } from '../journal.ts';
import { agentUrl, startVm } from './vm.ts';
import { artifactPath, type ServiceContext } from './context.ts';
import type { OpCtx } from './types.ts';

/** How long a cold-booted guest's agent may take to answer (a template build allows the same). */
const COLD_BOOT_READY_MS = 180_000;

/** What a restored guest is set up with by /init. */
export interface GuestSetup {
  token: string;
  envVars: Record<string, string>;
  /** The sandbox's egress rules. */
  egress: EgressRules;
}

/**
 * Restores `snap` into VM `id`, waits for its agent and /init's it (the new token, env, the
 * host's clock, a fresh entropy seed; `entropy` is what the agent did with the seed). Journals the VM so a failure or crash kills it. Shared by create and resume.
 * A snapshot without memory (a filesystem-only pause), or any with `coldBoot`, is booted afresh
 * on its disk instead: its memory and device state, if any, are neither read nor changed.
 */
export async function bootFrom(
  sc: ServiceContext,
  id: string,
  snap: SnapshotRecord,
  g: GuestSetup,
  run: OpRun,
  ctx: OpCtx,
  how: { coldBoot?: boolean } = {},
): Promise<{ restoreMs: number; readyMs: number; initMs: number; entropy: string }> {
  const cold = how.coldBoot === true || isDiskOnly(snap);
  const spec = await restoreSpec(sc, id, snap, g.egress.internet, cold);
  run.step('vm', { action: 'kill-vm', vmId: id });
  const t0 = performance.now();
  const info = await startVm(sc, spec, g.egress, run);
  const tRestored = performance.now();
  const base = agentUrl(info);
  const guest = sc.guest({
    baseUrl: base,
    accessToken: g.token,
    ...(ctx.opId ? { opId: ctx.opId } : {}),
  });
  // Readiness and /init on one connection of the guest client (see waitGuestReady).
  await waitGuestReady(guest, {
    what: `${base}/health`,
    // A cold boot (filesystem-only pause) runs the kernel and init first: minutes under TCG.
    timeoutMs: sc.readyTimeoutMs ?? (spec.restore ? 60_000 : COLD_BOOT_READY_MS),
    alive: async () => (await sc.driver.status(id)).state !== 'stopped',
    consoleTail: () => sc.driver.consoleTail(id, CONSOLE_LINES),
  });
  const tReady = performance.now();
  const entropy = await initGuest(sc, id, guest, snap, g, ctx);
  const tInit = performance.now();
  const ms = (a: number, b: number): number => Math.round(b - a);
  return {
    restoreMs: ms(t0, tRestored),
    readyMs: ms(tRestored, tReady),
    initMs: ms(tReady, tInit),
    entropy,
  };
}

/**
 * /init of a restored guest whose agent holds `current` (`snap`'s bootstrap token; a warm pool
 * member's own): the sandbox's token, env, default user, the host's clock and a fresh entropy
 * seed. Resolves with what the agent did with the seed (`reseeded`, else a warning is logged).
 * Shared by a restore and a warm pool member's take.
 */
export async function initGuest(
  sc: ServiceContext,
  id: string,
  guest: GuestClient,
  snap: SnapshotRecord,
  g: GuestSetup,
  ctx: OpCtx,
  current = snap.guestToken ?? undefined,
): Promise<string> {
  const { entropy = 'ignored' } = await guest.init(
    {
      accessToken: g.token,
      envVars: g.envVars,
      // No defaultUser / defaultWorkdir: a restored agent keeps its snapshot's (a template's last
      // USER and WORKDIR); a cold-booted one starts with `user`.
      timestamp: new Date(sc.now()).toISOString(),
      // Every clone of a snapshot wakes with the same CRNG state: a fresh seed, reseeded before
      // /init answers, so no two sandboxes read the same randomness (issue 14).
      entropySeed: randomBytes(64).toString('base64'),
    },
    current,
  );
  if (entropy !== 'reseeded')
    sc.log
      .child({ sandboxId: id, opId: ctx.opId })
      .warn({ entropy }, 'the guest did not reseed its CRNG from /init');
  return entropy;
}

/** The VM spec that restores `snap` as VM `id` (or cold-boots its disk). */
export async function restoreSpec(
  sc: ServiceContext,
  id: string,
  snap: SnapshotRecord,
  allowInternet: boolean,
  cold: boolean,
): Promise<VmSpec> {
  const file = (kind: ArtifactRecord['kind']): string | undefined => artifactPath(sc, snap, kind);
  const need = (kind: ArtifactRecord['kind']): string => {
    const f = file(kind);
    if (!f) throw new KilnError('internal', `snapshot ${snap.id} has no ${kind} artifact`);
    return f;
  };
  // An imported snapshot carries its own kernel and initrd; others use their template's image.
  const kernel = file('kernel');
  const initrd = file('initrd');
  const image =
    kernel && initrd
      ? { kernel, initrd, rootfs: need('disk') }
      : await sc.image(sc.store.getTemplate(snap.templateId).imageKey);
  const base = {
    id,
    resources: { memoryMiB: snap.memoryMiB, vcpus: snap.vcpus },
    network: { kind: allowInternet ? ('open' as const) : ('restricted' as const) },
    diskLayer: need('disk'),
  };
  if (!cold)
    return {
      ...base,
      machine: snap.machine,
      boot: { kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs },
      restore: { snapshot: { stateFile: need('state'), ramFile: need('memory') } },
    };
  // A filesystem-only pause, or a resume asked to reboot: a cold boot on its disk. Its agent
  // holds the hash of the pause's guest token (the sandbox's own) until /init presents it, as a
  // template's does; its RAM is laid out like a restore's so the sandbox can be snapshotted or
  // paused with memory later.
  if (!snap.guestToken) throw new KilnError('internal', `snapshot ${snap.id} has no guest token`);
  return {
    ...base,
    boot: {
      kernel: image.kernel,
      initrd: image.initrd,
      rootfs: image.rootfs,
      kernelArgs: [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(snap.guestToken)}`],
    },
    privateRamFile: await zeroRamFile(sc.dataDir, snap.memoryMiB),
  };
}

/** True for a snapshot that keeps a disk only (a filesystem-only pause): resuming it boots. */
export function isDiskOnly(snap: SnapshotRecord): boolean {
  return !snap.artifacts.some((a) => a.kind === 'memory');
}

/**
 * A sparse file of `memoryMiB` zeros under `<data>/ram/`, made once per size: cold-booted VMs map
 * it copy-on-write as their RAM (they never write it, so any number share it).
 */
async function zeroRamFile(dataDir: string, memoryMiB: number): Promise<string> {
  const dir = join(dataDir, 'ram');
  const file = join(dir, `zero-${memoryMiB}M`);
  if (existsSync(file)) return file;
  await mkdir(dir, { recursive: true });
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await truncate(await writeFile(tmp, '').then(() => tmp), memoryMiB * 1024 * 1024);
  await rename(tmp, file);
  return file;
}
