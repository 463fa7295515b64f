/**
 * bench/boot: spawn -> guest agent ready, for kiln's QemuDriver and for a raw qemu-system command
 * line booting the same image, interleaved, median of N (default 5) each, and their ratio.
 * Target: kiln adds <= 5% over raw QEMU.
 *
 *   scripts/node bench/boot.ts [--runs N] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { benchArgs, median } from './stats.ts';
import { waitPidExit } from '../src/core/proc.ts';
import type { Image } from '../src/images/registry.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';
import { AGENT_PORT } from '../src/vmm/driver.ts';
import { waitForHttp } from '../src/vmm/health.ts';
import { hostTscKhz } from '../src/vmm/qemu/host.ts';
import { QemuDriver } from '../src/vmm/qemu/qemu-driver.ts';

const { runs, json } = benchArgs({ runs: 5 });
const MEM = 256;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** The baseline: what someone would type by hand — same kernel, initrd, image, machine, TSC fix. */
async function rawBoot(img: Image, accel: 'kvm' | 'tcg'): Promise<number> {
  const port = await freePort();
  const tsc = hostTscKhz();
  const t0 = performance.now();
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-M', 'microvm', ...(accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,tb-size=64']),
      '-m', `${MEM}M`, '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', img.kernel, '-initrd', img.initrd,
      '-append', `console=ttyS0 root=/dev/vda rw panic=-1 quiet${tsc ? ` tsc_early_khz=${tsc}` : ''}`,
      '-serial', 'null',
      '-drive', `id=root,file=${img.rootfs},format=raw,if=none,snapshot=on`, '-device', 'virtio-blk-device,drive=root',
      '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:${AGENT_PORT}`, '-device', 'virtio-net-device,netdev=n0',
      '-device', 'virtio-rng-device',
    ], // prettier-ignore
    { stdio: 'ignore' },
  );
  try {
    await waitForHttp(`http://127.0.0.1:${port}/health`, { timeoutMs: 180_000, attemptTimeoutMs: 1000 });
    return performance.now() - t0;
  } finally {
    qemu.kill('SIGKILL');
    if (qemu.pid) await waitPidExit(qemu.pid, 5000);
  }
}

async function kilnBoot(driver: QemuDriver, img: Image, i: number): Promise<number> {
  const id = `bench-${i}`;
  const t0 = performance.now();
  const info = await driver.start({
    id,
    boot: { kernel: img.kernel, initrd: img.initrd, rootfs: img.rootfs },
    resources: { memoryMiB: MEM, vcpus: 1 },
    network: { kind: 'open' },
  });
  try {
    await waitForHttp(`http://${info.agent.host}:${info.agent.port}/health`, {
      timeoutMs: 180_000,
      attemptTimeoutMs: 1000,
    });
    return performance.now() - t0;
  } finally {
    await driver.kill(id);
  }
}

async function main(): Promise<void> {
  const img = await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bench-');
  const driver = new QemuDriver({ runDir: `${root}/vms` });
  const accel = (await driver.accel(img)).accel;
  const kiln: number[] = [];
  const raw: number[] = [];
  try {
    // Warm the page cache once so neither side pays for the first read of the image.
    await rawBoot(img, accel);
    for (let i = 0; i < runs; i++) {
      // Interleave so drift in the host's load hits both sides alike.
      raw.push(await rawBoot(img, accel));
      kiln.push(await kilnBoot(driver, img, i));
      if (!json)
        process.stderr.write(
          `run ${i + 1}/${runs}: raw ${raw.at(-1)?.toFixed(0)} ms, kiln ${kiln.at(-1)?.toFixed(0)} ms\n`,
        );
    }
  } finally {
    await driver.close();
    await rm(root, { recursive: true, force: true });
  }
  const res = {
    bench: 'boot',
    accel,
    runs,
    memoryMiB: MEM,
    rawMedianMs: Math.round(median(raw)),
    kilnMedianMs: Math.round(median(kiln)),
    ratio: Number((median(kiln) / median(raw)).toFixed(3)),
    target: 1.05,
    rawMs: raw.map(Math.round),
    kilnMs: kiln.map(Math.round),
  };
  if (json) {
    console.log(JSON.stringify(res));
    return;
  }
  console.log(`bench/boot (${accel}, ${MEM} MiB, median of ${runs}): spawn -> guest agent /health`);
  console.log(`  raw qemu-system  ${String(res.rawMedianMs).padStart(6)} ms   ${res.rawMs.join(' ')}`);
  console.log(`  kiln QemuDriver  ${String(res.kilnMedianMs).padStart(6)} ms   ${res.kilnMs.join(' ')}`);
  console.log(`  ratio kiln/raw   ${res.ratio.toFixed(3)}   (target <= ${res.target})`);
}

await main();
