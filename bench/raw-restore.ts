/** The raw-QEMU baseline shared by the benchmarks: restore a template snapshot by hand. */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { sleep, waitPidExit } from '../src/core/proc.ts';
import { waitForHttp } from '../src/vmm/health.ts';
import { qemuArgs } from '../src/vmm/qemu/args.ts';
import { hostTscKhz } from '../src/vmm/qemu/host.ts';
import { QmpClient } from '../src/vmm/qemu/qmp.ts';

/**
 * Raw QEMU: restores the snapshot in `snapDir` (same machine as kiln's restores) until the guest
 * agent answers GET /health; returns the milliseconds that took. The VM is killed afterwards.
 */
export async function rawRestoreMs(
  img: { kernel: string; initrd: string; rootfs: string },
  snapDir: string,
  id: string,
): Promise<number> {
  const dir = await mkdtemp('/tmp/kiln-raw-');
  const overlay = `${dir}/overlay.qcow2`;
  await new Promise((r) =>
    spawn('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      `${snapDir}/disk.qcow2`,
      '-F',
      'qcow2',
      overlay,
    ]).on('close', r),
  );
  const spec = {
    id,
    kernel: img.kernel,
    initrd: img.initrd,
    rootfs: img.rootfs,
    memoryMiB: 512,
    vcpus: 1,
    memoryFile: { path: `${snapDir}/memory`, share: false },
    incoming: { stateFile: `${snapDir}/state` },
  };
  const args = qemuArgs(spec, {
    accel: 'tcg',
    tcgCacheMiB: 64,
    tscKhz: hostTscKhz(),
    overlay,
    qmpSocket: `${dir}/qmp.sock`,
    serialLog: `${dir}/serial.log`,
    pidFile: `${dir}/qemu.pid`,
    daemonize: false,
  });
  const t0 = performance.now();
  const q = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  try {
    let qmp: QmpClient | undefined;
    for (let i = 0; i < 200 && !qmp; i++) {
      qmp = await QmpClient.connect(`${dir}/qmp.sock`, { timeoutMs: 2000 }).catch(async () => {
        await sleep(5);
        return undefined;
      });
    }
    if (!qmp) throw new Error('raw QEMU never opened its QMP socket');
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate-incoming', { uri: `exec:cat '${snapDir}/state'` });
    for (;;) {
      const st = await qmp.execute<{ status: string; running: boolean }>('query-status');
      if (st.running) break;
      if (st.status === 'paused') {
        await qmp.execute('cont');
        break;
      }
      await sleep(2);
    }
    const fwd = await qmp.execute<string>('human-monitor-command', { 'command-line': 'info usernet' });
    const port = Number(/HOST_FORWARD\]\s+\d+\s+\S+\s+(\d+)/.exec(fwd)?.[1]);
    await waitForHttp(`http://127.0.0.1:${port}/health`, { timeoutMs: 60_000, attemptTimeoutMs: 1000 });
    const ms = performance.now() - t0;
    qmp.close();
    return ms;
  } finally {
    q.kill('SIGKILL');
    if (q.pid) await waitPidExit(q.pid, 5000);
    await rm(dir, { recursive: true, force: true });
  }
}
