import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Sandbox } from 'e2b';
import { waitForHttp } from '../../src/vmm/health.ts';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import type { VmInfo } from '../../src/vmm/driver.ts';
import { bootstrapToken, connectE2b } from './e2b-stub.ts';
import type { Image } from '../../src/images/registry.ts';
import { ensureDefaultImage } from './image.ts';

export interface AgentVm {
  info: VmInfo;
  agentUrl: string;
  accessToken: string;
  /** The real `e2b` SDK connected to the guest's agent. */
  sandbox: Sandbox;
  close: () => Promise<void>;
}

/**
 * Boots a real guest from the default image (or `o.image`), waits for its agent, /init's it (token, default
 * user `user`, env vars, host time) and connects the `e2b` SDK to it through a stub control
 * plane. On any failure the VM is killed and the serial console's tail is in the error.
 */
export async function bootAgentVm(
  o: { memoryMiB?: number; vcpus?: number; envVars?: Record<string, string>; image?: Image } = {},
): Promise<AgentVm> {
  const img = o.image ?? (await ensureDefaultImage());
  const root = await mkdtemp('/tmp/kiln-guest-');
  const driver = new QemuDriver({ runDir: `${root}/vms` });
  const boot = bootstrapToken();
  const info = await driver.start({
    id: 'guest',
    boot: { kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs, kernelArgs: boot.kernelArgs },
    resources: { memoryMiB: o.memoryMiB ?? 1024, vcpus: o.vcpus ?? 1 },
    network: { kind: 'open' },
  });
  const agentUrl = `http://${info.agent.host}:${info.agent.port}`;
  const stopVm = async (): Promise<void> => {
    await driver.kill('guest');
    await driver.close();
    await rm(root, { recursive: true, force: true });
  };
  try {
    await waitForHttp(`${agentUrl}/health`, {
      timeoutMs: 180_000,
      alive: async () => (await driver.status('guest')).state !== 'stopped',
    });
    const accessToken = 'vm-' + Math.random().toString(36).slice(2);
    const { sandbox, close } = await connectE2b(
      agentUrl,
      { accessToken, defaultUser: 'user', envVars: o.envVars ?? {} },
      boot.token,
    );
    return {
      info,
      agentUrl,
      accessToken,
      sandbox,
      close: async () => {
        close();
        await stopVm();
      },
    };
  } catch (e) {
    const serial = await readFile(info.serialLog, 'utf8').catch(() => '');
    await stopVm();
    throw new Error(
      `the guest agent did not come up: ${(e as Error).message}\n--- serial console (tail) ---\n${serial.slice(-3000)}`,
      {
        cause: e,
      },
    );
  }
}
