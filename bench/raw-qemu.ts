/**
 * Baselines for the benchmarks: plain QEMU driven over QMP by hand, with the same machine shape
 * kiln uses (qemuArgs) but none of kiln's code paths (no driver, daemon, journal or agent /init).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { sleep, waitPidExit } from '../src/core/proc.ts';
import { waitForHttp } from '../src/vmm/health.ts';
import { FORWARD_HOST, qemuArgs } from '../src/vmm/qemu/args.ts';
import { planVm } from '../src/vmm/qemu/plan.ts';
import { hostTscKhz } from '../src/vmm/qemu/host.ts';
import { QmpClient } from '../src/vmm/qemu/qmp.ts';

export interface BootFiles {
  kernel: string;
  initrd: string;
  rootfs: string;
}

/** A snapshot as kiln stores it: RAM file, device state, frozen disk layer. */
export interface SnapshotFiles {
  memory: string;
  state: string;
  disk: string;
  memoryMiB: number;
}

export interface RawVm {
  /** Restore until the guest agent answered /health (ms). */
  readyMs: number;
  pid: number;
  qmp: QmpClient;
  dir: string;
  stop: () => Promise<void>;
}

let seq = 0;

/** Restores a snapshot with plain QEMU (RAM mapped copy-on-write) until the agent answers. */
export async function rawRestore(img: BootFiles, snap: SnapshotFiles): Promise<RawVm> {
  const dir = await mkdtemp('/tmp/kiln-raw-');
  const overlay = `${dir}/overlay.qcow2`;
  await new Promise((r) =>
    spawn('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', snap.disk, '-F', 'qcow2', overlay]).on(
      'close',
      r,
    ),
  );
  const spec = planVm({
    id: `raw-${seq++}`,
    boot: img,
    resources: { memoryMiB: snap.memoryMiB, vcpus: 1 },
    network: { kind: 'open' },
    diskLayer: snap.disk,
    restore: { snapshot: { stateFile: snap.state, ramFile: snap.memory } },
  });
  const args = qemuArgs(spec, {
    accel: 'tcg',
    tcgCacheMiB: 64,
    tscKhz: hostTscKhz(),
    overlay,
    qmpSocket: `${dir}/qmp.sock`,
    serialLog: `${dir}/serial.log`,
    pidFile: `${dir}/qemu.pid`,
    daemonize: false,
    forwardHost: FORWARD_HOST,
  });
  const t0 = performance.now();
  const q: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  const stop = async (): Promise<void> => {
    q.kill('SIGKILL');
    if (q.pid) await waitPidExit(q.pid, 5000);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    let qmp: QmpClient | undefined;
    for (let i = 0; i < 400 && !qmp; i++) {
      qmp = await QmpClient.connect(`${dir}/qmp.sock`, { timeoutMs: 2000 }).catch(async () => {
        await sleep(5);
        return undefined;
      });
    }
    if (!qmp) throw new Error('raw QEMU never opened its QMP socket');
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate-incoming', { uri: `exec:cat '${snap.state}'` });
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
    await waitForHttp(`http://${FORWARD_HOST}:${port}/health`, {
      timeoutMs: 120_000,
      attemptTimeoutMs: 1000,
    });
    return { readyMs: performance.now() - t0, pid: q.pid ?? 0, qmp, dir, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * The raw save a snapshot's pause is measured against: stop the vCPUs, migrate device state and
 * RAM to a file at full speed, run again. Returns how long the vCPUs were stopped (ms) and bytes.
 */
export async function rawSave(vm: RawVm, file: string): Promise<{ pauseMs: number; bytes: number }> {
  const q = vm.qmp;
  await q.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: false }],
  });
  await q.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 2 ** 30 });
  const t0 = performance.now();
  await q.execute('stop');
  await q.execute('migrate', { uri: `exec:cat > '${file}'` });
  for (;;) {
    const m = await q.execute<{ status?: string }>('query-migrate');
    if (m.status === 'completed') break;
    if (m.status === 'failed') throw new Error('raw save failed');
    await sleep(2);
  }
  await q.execute('cont');
  const pauseMs = performance.now() - t0;
  return { pauseMs, bytes: (await stat(file)).size };
}

/** The files of snapshot `id` under a kiln state dir (as kiln stores them). */
export function snapshotFiles(stateDir: string, id: string, memoryMiB: number): SnapshotFiles {
  const d = `${stateDir}/data/snapshots/${id}`;
  return { memory: `${d}/memory`, state: `${d}/state`, disk: `${d}/disk.qcow2`, memoryMiB };
}

/** Raw restore of a snapshot until its agent answers, then stopped: the restore time (ms). */
export async function rawRestoreMs(img: BootFiles, snap: SnapshotFiles): Promise<number> {
  const vm = await rawRestore(img, snap);
  vm.qmp.close();
  await vm.stop();
  return vm.readyMs;
}
