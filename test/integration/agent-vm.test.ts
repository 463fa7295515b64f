/**
 * The guest agent inside a real QEMU guest booted from `kiln image build`'s image, driven by the
 * real `e2b` SDK through the forwarded port (a stub control plane hands the SDK the address and
 * token, as kiln's daemon will). Default user `user`, like E2B's base template.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Sandbox } from 'e2b';
import { QemuDriver } from '../../src/vmm/qemu/qemu-driver.ts';
import { AGENT_PORT } from '../../src/vmm/qemu/args.ts';
import { waitForHttp } from '../../src/vmm/health.ts';
import { envdSuite } from '../envd/envd.suite.ts';
import { startE2bStub } from '../helpers/e2b-stub.ts';
import { ensureDefaultImage } from '../helpers/image.ts';

envdSuite('agent in a QEMU guest (TCG), user "user"', async () => {
  const img = await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-agentvm-');
  const driver = new QemuDriver({ runDir: `${root}/vms` });
  const info = await driver.start({
    id: 'agent',
    kernel: img.kernel,
    initrd: img.initrd,
    rootfs: img.rootfs,
    memoryMiB: 1024,
    vcpus: 1,
  });
  const agentUrl = `http://127.0.0.1:${info.ports[AGENT_PORT] ?? 0}`;
  const stop = async (): Promise<void> => {
    await driver.kill('agent');
    await driver.close();
    await rm(root, { recursive: true, force: true });
  };
  try {
    await waitForHttp(`${agentUrl}/health`, {
      timeoutMs: 180_000,
      alive: async () => (await driver.status('agent')).state !== 'stopped',
    });
  } catch (e) {
    const serial = await readFile(info.serialLog, 'utf8').catch(() => '');
    await stop();
    throw new Error(
      `the guest agent did not come up: ${(e as Error).message}\n--- serial console (tail) ---\n${serial.slice(-3000)}`,
      { cause: e },
    );
  }
  const accessToken = 'vm-' + Math.random().toString(36).slice(2);
  const init = await fetch(`${agentUrl}/init`, {
    method: 'POST',
    body: JSON.stringify({
      accessToken,
      defaultUser: 'user',
      envVars: { KILN_INIT_VAR: 'from-init' },
      timestamp: new Date().toISOString(),
    }),
  });
  if (init.status !== 204) throw new Error(`/init answered ${init.status}: ${await init.text()}`);
  const stub = await startE2bStub({ envdAccessToken: accessToken });
  const sandbox = await Sandbox.connect('sbx-vm', {
    apiUrl: stub.url,
    sandboxUrl: agentUrl,
    apiKey: 'e2b_kiln_test',
  });
  const dir = '/home/user/kiln-test';
  await sandbox.files.makeDir(dir);
  return {
    sandbox,
    agentUrl,
    accessToken,
    defaultUser: 'user',
    dir,
    otherUser: { name: 'user', home: '/home/user' },
    fillableDisk: true,
    close: async () => {
      stub.server.close();
      await stop();
    },
  };
});
