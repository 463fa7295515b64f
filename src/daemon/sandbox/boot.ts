import type { ArtifactRecord, SnapshotRecord } from '../../core/domain.ts';
import type { EgressRules } from '../../core/network-policy.ts';
import { KilnError } from '../../core/errors.ts';
import type { VmSpec } from '../../vmm/driver.ts';
import { waitGuestReady } from '../guest-client.ts';
import type { OpRun } from '../journal.ts';
import { agentUrl, startVm } from './vm.ts';
import { artifactPath, type ServiceContext } from './context.ts';
import type { OpCtx } from './types.ts';

/** What a restored guest is set up with by /init. */
export interface GuestSetup {
  token: string;
  envVars: Record<string, string>;
  /** The sandbox's egress rules. */
  egress: EgressRules;
}

/**
 * Restores `snap` into VM `id`, waits for its agent and /init's it (the new token, env, the
 * host's clock). Journals the VM so a failure or crash kills it. Shared by create and resume.
 */
export async function bootFrom(
  sc: ServiceContext,
  id: string,
  snap: SnapshotRecord,
  g: GuestSetup,
  run: OpRun,
  ctx: OpCtx,
): Promise<{ restoreMs: number; readyMs: number; initMs: number }> {
  const spec = await restoreSpec(sc, id, snap, g.egress.internet);
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
    timeoutMs: sc.readyTimeoutMs ?? 60_000,
    alive: async () => (await sc.driver.status(id)).state !== 'stopped',
  });
  const tReady = performance.now();
  await guest.init(
    {
      accessToken: g.token,
      envVars: g.envVars,
      defaultUser: 'user',
      timestamp: new Date(sc.now()).toISOString(),
    },
    snap.guestToken ?? undefined,
  );
  const tInit = performance.now();
  const ms = (a: number, b: number): number => Math.round(b - a);
  return { restoreMs: ms(t0, tRestored), readyMs: ms(tRestored, tReady), initMs: ms(tReady, tInit) };
}

async function restoreSpec(
  sc: ServiceContext,
  id: string,
  snap: SnapshotRecord,
  allowInternet: boolean,
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
  return {
    id,
    boot: { kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs },
    resources: { memoryMiB: snap.memoryMiB, vcpus: snap.vcpus },
    network: { kind: allowInternet ? 'open' : 'restricted' },
    diskLayer: need('disk'),
    restore: { snapshot: { stateFile: need('state'), ramFile: need('memory') } },
  };
}
