import { KilnError } from '../../core/errors.ts';
import type { EgressRules } from '../../core/network-policy.ts';
import type { StopOpts, VmInfo, VmSpec, VmmDriver } from '../../vmm/driver.ts';
import type { OpRun } from '../journal.ts';
import type { NetworkProvider } from '../networks.ts';

interface VmDeps {
  driver: VmmDriver;
  networks?: NetworkProvider | undefined;
}

/**
 * Starts a VM in a network slot of its own loaded with `egress` (the slot's rules decide; the
 * spec's kind matters only without sandbox networks, where the VM shares the host's network). A
 * failed start releases the slot; with `run`, the slot is journalled (`network`, undone by
 * releasing it), and a crash before that step leaves it to reconciliation.
 */
export async function startVm(
  deps: VmDeps,
  spec: VmSpec,
  egress: EgressRules,
  run?: Pick<OpRun, 'step'>,
): Promise<VmInfo> {
  const nets = deps.networks;
  if (!nets) return deps.driver.start(spec);
  const slot = await nets.acquire(egress, spec.id);
  run?.step('network', { action: 'release-network', namespace: slot.namespace });
  try {
    return await deps.driver.start({
      ...spec,
      network: { ...spec.network, kind: 'open', namespace: { path: slot.namespace, address: slot.address } },
    });
  } catch (e) {
    await nets.release(slot.namespace).catch(() => undefined);
    throw e;
  }
}

/** Releases the network slot VM `info` ran in, if any (after the VM ended). */
async function releaseNetwork(deps: VmDeps, namespace: string | undefined): Promise<void> {
  if (deps.networks && namespace) await deps.networks.release(namespace);
}

/** The network namespace VM `vmId` runs in, when the service has networks and the VM exists. */
async function namespaceOf(deps: VmDeps, vmId: string): Promise<string | undefined> {
  if (!deps.networks) return undefined;
  return deps.driver.status(vmId).then(
    (i) => i.namespace,
    () => undefined,
  );
}

/** Stops VM `vmId` gracefully (`driver.stop`, e.g. keeping its overlay), then releases its slot. */
export async function stopVm(deps: VmDeps, vmId: string, opts: StopOpts = {}): Promise<void> {
  const ns = await namespaceOf(deps, vmId);
  await deps.driver.stop(vmId, opts);
  await releaseNetwork(deps, ns);
}

/** What the sandbox operations, recovery and the journal need of a VM beyond the driver's calls. */

/**
 * Kills VM `vmId` and removes what it leaves behind (its network slot too); a VM that does not
 * exist is already killed.
 * Idempotent. A kill (`kill.ts`), recovery and every other path that ends a VM call it directly;
 * the journal's undo interpreter calls it to replay a `kill-vm` step.
 */
export async function killVm(deps: VmDeps, vmId: string): Promise<void> {
  const ns = await namespaceOf(deps, vmId);
  await deps.driver.kill(vmId).catch((e: unknown) => {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  });
  await releaseNetwork(deps, ns);
}

/** The host port the guest agent of a VM is forwarded to, if it is. */
export function agentPort(info: VmInfo): number | undefined {
  return info.agent.port || undefined;
}

/** Where the guest agent of a VM answers: `http://<host>:<forwarded port>`. */
export function agentUrl(info: VmInfo): string {
  return `http://${info.agent.host}:${info.agent.port}`;
}
