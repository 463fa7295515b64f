/**
 * bench/density, in one run:
 * 1. The floor: F raw QEMU restores (default 10) of the template snapshot, idle for W seconds
 *    (default 60): host memory (PSS) and host CPU of each QEMU.
 * 2. kiln: N sandboxes (default 100) created through the daemon's API (isolated networks, the
 *    create path users get), idle for W seconds: PSS and CPU of each sandbox's QEMU, plus kilnd's
 *    own CPU shared out per sandbox; then a command in every one of them (all must answer).
 *    Targets: PSS <= 64 MB and idle CPU <= 0.3% of a core per sandbox.
 *
 *   scripts/node bench/density.ts [--sandboxes N] [--floor F] [--idle W] [--memory MiB] [--json]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { vmPid } from './kiln-measure.ts';
import { rawRestore, snapshotFiles, type RawVm } from './raw-qemu.ts';
import { benchArgs, median, percentile } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { procUsage, sleep } from '../src/core/proc.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';

const args = benchArgs({ sandboxes: 100, floor: 10, idle: 60, memory: 512 });
const say = (s: string): void => {
  if (!args.json) process.stderr.write(`${s}\n`);
};

interface Idle {
  count: number;
  pssPerVmMB: number;
  cpuPctPerVm: number;
  cpuPctP99: number;
}

/** PSS and CPU of the given processes over `secs` of idling (after a settle of 10 s), and the CPU of `others`. */
async function measureIdle(
  pids: number[],
  secs: number,
  others: Record<string, number> = {},
): Promise<Idle & { othersCpuPct: Record<string, number> }> {
  await sleep(10_000);
  const ticks = (pid: number): number => procUsage(pid)?.cpuTicks ?? 0;
  const before = pids.map(ticks);
  const othersBefore = Object.fromEntries(Object.entries(others).map(([k, p]) => [k, ticks(p)]));
  const t0 = performance.now();
  await sleep(secs * 1000);
  const el = (performance.now() - t0) / 1000;
  const cpu = pids.map((p, i) => ((ticks(p) - (before[i] ?? 0)) / 100 / el) * 100);
  const pss = pids.map((p) => procUsage(p)?.pssBytes ?? 0);
  const othersCpuPct = Object.fromEntries(
    Object.entries(others).map(([k, p]) => [
      k,
      +(((ticks(p) - (othersBefore[k] ?? 0)) / 100 / el) * 100).toFixed(2),
    ]),
  );
  return {
    count: pids.length,
    pssPerVmMB: +(pss.reduce((a, b) => a + b, 0) / pids.length / 1e6).toFixed(1),
    cpuPctPerVm: +(cpu.reduce((a, b) => a + b, 0) / pids.length).toFixed(3),
    cpuPctP99: +percentile(cpu, 99).toFixed(3),
    othersCpuPct,
  };
}

/** The host's KSM (kernel same-page merging): whether it runs, and its scanner thread's pid. */
function ksm(): { on: boolean; pid: number | undefined } {
  const on = readFileSync('/sys/kernel/mm/ksm/run', 'utf8').trim() === '1';
  const pid = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .find((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'ksmd';
      } catch {
        return false;
      }
    });
  return { on, pid: pid === undefined ? undefined : Number(pid) };
}

async function measureFloor(
  root: string,
  img: Awaited<ReturnType<typeof ensureDefaultImage>>,
  snapshotId: string,
  raws: RawVm[],
): Promise<Idle> {
  say(`floor: ${args.floor} raw QEMU restores`);
  const snap = snapshotFiles(root, snapshotId, args.memory);
  for (let i = 0; i < args.floor; i++) raws.push(await rawRestore(img, snap));
  say(`floor: idle ${args.idle} s`);
  const floor = await measureIdle(
    raws.map((r) => r.pid),
    args.idle,
  );
  for (const r of raws.splice(0)) {
    r.qmp.close();
    await r.stop();
  }
  return floor;
}

/** Creates N sandboxes one after another, measures them idle, then runs a command in each. */
async function measureKiln(c: KilnClient, root: string, ids: string[]) {
  const createMs: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < args.sandboxes; i++) {
    const s0 = performance.now();
    ids.push((await c.createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId);
    createMs.push(performance.now() - s0);
    if ((i + 1) % 10 === 0)
      say(`created ${i + 1}/${args.sandboxes} (last ${createMs.at(-1)?.toFixed(0)} ms)`);
  }
  const createAllS = (performance.now() - t0) / 1000;
  say(`kiln: idle ${args.idle} s`);
  const k = ksm();
  const kiln = await measureIdle(
    ids.map((id) => vmPid(root, id)),
    args.idle,
    { kilnd: process.pid, ...(k.on && k.pid ? { ksmd: k.pid } : {}) }, // kilnd runs in this process
  );

  say('kiln: a command in every sandbox');
  let answered = 0;
  const e0 = performance.now();
  for (const id of ids) {
    let out = '';
    await c.exec(id, 'echo ok', { onStdout: (b) => (out += b.toString()) });
    if (out === 'ok\n') answered++;
  }
  return {
    ...kiln,
    kilndCpuPct: kiln.othersCpuPct['kilnd'] ?? 0,
    kilndCpuPctPerSandbox: +((kiln.othersCpuPct['kilnd'] ?? 0) / ids.length).toFixed(3),
    ksm: k.on,
    ksmdCpuPct: kiln.othersCpuPct['ksmd'] ?? null,
    createMedianMs: Math.round(median(createMs)),
    createP99Ms: Math.round(percentile(createMs, 99)),
    createAllSeconds: +createAllS.toFixed(1),
    answered,
    execAllSeconds: +((performance.now() - e0) / 1000).toFixed(1),
  };
}

function print(floor: Idle, k: Awaited<ReturnType<typeof measureKiln>>): void {
  console.log(`bench/density (TCG, ${args.memory} MiB template, idle ${args.idle} s)`);
  console.log(
    `  floor: ${floor.count} raw QEMU restores        PSS ${floor.pssPerVmMB} MB each, CPU ${floor.cpuPctPerVm}% of a core each (p99 ${floor.cpuPctP99})`,
  );
  console.log(
    `  kiln:  ${k.count} sandboxes (isolated)       PSS ${k.pssPerVmMB} MB each (target <= 64), CPU ${k.cpuPctPerVm}% of a core each (p99 ${k.cpuPctP99}; target <= 0.3)`,
  );
  console.log(
    `         kilnd's own CPU while idle: ${k.kilndCpuPct}% of a core (${k.kilndCpuPctPerSandbox}% per sandbox); KSM ${k.ksm ? `on, ksmd ${k.ksmdCpuPct}% of a core` : 'off'}`,
  );
  console.log(
    `         creates: median ${k.createMedianMs} ms, p99 ${k.createP99Ms} ms, all ${k.createAllSeconds} s; a command in every one: ${k.answered}/${k.count} answered in ${k.execAllSeconds} s`,
  );
}

async function main(): Promise<void> {
  const img = await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bd-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
    // 100 guests of 512 MiB promise more than the host's memory: restored clones share pages.
    overcommitRatio: 4,
    diskOvercommitRatio: 20,
    network: { mode: 'isolated' },
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  const raws: RawVm[] = [];
  const ids: string[] = [];
  try {
    say('building the template');
    const tpl = await c.buildTemplate({ name: 'base', memoryMiB: args.memory, vcpus: 1 });
    const floor = await measureFloor(root, img, tpl.snapshotId ?? '', raws);
    const kiln = await measureKiln(c, root, ids);
    const res = {
      bench: 'density',
      memoryMiB: args.memory,
      idleSeconds: args.idle,
      floor: { ...floor, othersCpuPct: undefined },
      kiln,
      targets: { pssPerSandboxMB: 64, cpuPctPerSandbox: 0.3 },
    };
    if (args.json) console.log(JSON.stringify(res));
    else print(floor, kiln);
  } finally {
    for (const r of raws) {
      r.qmp.close();
      await r.stop();
    }
    for (const id of ids) await c.killSandbox(id).catch(() => undefined);
    await kilnd.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
