import { KilnError } from '../../core/errors.ts';
import type { VmInfo, VmmDriver } from '../../vmm/driver.ts';

/** What the sandbox operations, recovery and the journal need of a VM beyond the driver's calls. */

/**
 * Kills VM `vmId` and removes what it leaves behind; a VM that does not exist is already killed.
 * Idempotent. A kill (`kill.ts`), recovery and every other path that ends a VM call it directly;
 * the journal's undo interpreter calls it to replay a `kill-vm` step.
 */
export async function killVm(deps: { driver: VmmDriver }, vmId: string): Promise<void> {
  await deps.driver.kill(vmId).catch((e: unknown) => {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  });
}

/** The host port the guest agent of a VM is forwarded to, if it is. */
export function agentPort(info: VmInfo): number | undefined {
  return info.agent.port || undefined;
}

/** Where the guest agent of a VM answers: `http://<host>:<forwarded port>`. */
export function agentUrl(info: VmInfo): string {
  return `http://${info.agent.host}:${info.agent.port}`;
}
