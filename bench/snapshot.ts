/**
 * bench/snapshot, in one run, kiln beside plain QEMU doing the same steps by hand (raw-qemu.ts):
 * 1. pause of the source while a snapshot is taken: kiln's reported pause (stop, save state and
 *    RAM, freeze the disk, run again) vs raw stop + migrate to a file + cont. Target <= 1.2x.
 * 2. restore -> first exec: kiln API restore until a command's output is back vs raw restore of
 *    the same snapshot files until the agent answers.
 * 3. fork of 10: wall time until all 10 clones answer, and host memory (PSS) per clone, vs 10 raw
 *    restores of the same snapshot started at once. Target PSS <= 100 MB per clone.
 *
 *   scripts/node bench/snapshot.ts [--runs N] [--fork N] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { procUsage, sleep } from '../src/core/proc.ts';
import { KilnClient, type SnapshotView } from '../src/sdk/client.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';
import { vmPid } from './kiln-measure.ts';
import { rawRestore, rawRestoreMs, rawSave, snapshotFiles, type SnapshotFiles } from './raw-qemu.ts';
import { benchArgs, median } from './stats.ts';

const { runs, fork: forkN, json } = benchArgs({ runs: 5, fork: 10 });
const log = (s: string): void => {
  if (!json) process.stderr.write(`${s}\n`);
};
const avg = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

type Image = Awaited<ReturnType<typeof ensureDefaultImage>>;
/** What every step needs: the image, kilnd's client and a snapshot's files on disk. */
interface Bench {
  img: Image;
  c: KilnClient;
  root: string;
  files: (snap: SnapshotView) => SnapshotFiles;
}

/** Step 1: the source's pause while a snapshot is taken, kiln vs raw stop + save + cont. */
async function measurePause(b: Bench, tplSnap: SnapshotView, sourceId: string) {
  const rawSrc = await rawRestore(b.img, b.files(tplSnap));
  const rawPause: number[] = [];
  const kilnPause: number[] = [];
  const kilnWall: number[] = [];
  let snap: SnapshotView | undefined;
  for (let i = 0; i < runs; i++) {
    rawPause.push((await rawSave(rawSrc, `${rawSrc.dir}/save`)).pauseMs);
    const t0 = performance.now();
    snap = await b.c.snapshot(sourceId);
    kilnWall.push(performance.now() - t0);
    kilnPause.push(snap.pauseMs ?? NaN);
    log(
      `snapshot ${i + 1}/${runs}: raw pause ${rawPause.at(-1)?.toFixed(0)} ms, kiln pause ${snap.pauseMs} ms (call ${kilnWall.at(-1)?.toFixed(0)} ms)`,
    );
  }
  await rawSrc.stop();
  if (!snap) throw new Error('no snapshot taken');
  return { snap, rawPause, kilnPause, kilnWall };
}

/** Step 2: restore -> first exec, kiln's API vs a raw restore until the agent answers. */
async function measureRestore(b: Bench, snap: SnapshotView) {
  const rawRestoreTimes: number[] = [];
  const kilnRestoreMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    rawRestoreTimes.push(await rawRestoreMs(b.img, b.files(snap)));
    const t0 = performance.now();
    const s = await b.c.restoreSnapshot(snap.snapshotId);
    let out = '';
    await b.c.exec(s.sandboxId, 'cat /home/user/f', { onStdout: (x) => (out += x.toString()) });
    kilnRestoreMs.push(performance.now() - t0);
    if (out !== 'state\n') throw new Error(`restored sandbox says ${out}`);
    await b.c.killSandbox(s.sandboxId);
    log(
      `restore ${i + 1}/${runs}: raw ${rawRestoreTimes.at(-1)?.toFixed(0)} ms, kiln ${kilnRestoreMs.at(-1)?.toFixed(0)} ms`,
    );
  }
  return { rawRestoreTimes, kilnRestoreMs };
}

/** Step 3: a fork of N, wall time and PSS per clone, vs N raw restores started at once. */
async function measureFork(b: Bench, snap: SnapshotView, sourceId: string) {
  let t0 = performance.now();
  const raws = await Promise.all(Array.from({ length: forkN }, () => rawRestore(b.img, b.files(snap))));
  const rawForkMs = performance.now() - t0;
  await sleep(5000);
  const rawPss = raws.map((v) => procUsage(v.pid)?.pssBytes ?? 0);
  for (const v of raws) {
    v.qmp.close();
    await v.stop();
  }
  log(`raw: ${forkN} restores at once ${rawForkMs.toFixed(0)} ms`);
  t0 = performance.now();
  const fork = await b.c.fork(sourceId, { count: forkN, timeoutS: 3600 });
  const kilnForkMs = performance.now() - t0;
  const clones = fork.results.flatMap((r) => ('sandbox' in r ? [r.sandbox.sandboxId] : []));
  if (clones.length !== forkN) throw new Error(`fork made ${clones.length} of ${forkN} clones`);
  await sleep(5000);
  const kilnPss = clones.map((id) => procUsage(vmPid(b.root, id))?.pssBytes ?? 0);
  for (const id of [...clones, sourceId]) await b.c.killSandbox(id);
  log(`kiln: fork of ${forkN} ${kilnForkMs.toFixed(0)} ms`);
  return { rawForkMs, kilnForkMs, rawPss, kilnPss };
}

function summarize(
  p: Awaited<ReturnType<typeof measurePause>>,
  r: Awaited<ReturnType<typeof measureRestore>>,
  f: Awaited<ReturnType<typeof measureFork>>,
) {
  return {
    bench: 'snapshot',
    runs,
    rawSavePauseMedianMs: Math.round(median(p.rawPause)),
    kilnSnapshotPauseMedianMs: Math.round(median(p.kilnPause)),
    pauseRatio: +(median(p.kilnPause) / median(p.rawPause)).toFixed(3),
    pauseTarget: 1.2,
    kilnSnapshotCallMedianMs: Math.round(median(p.kilnWall)),
    rawRestoreToAgentMedianMs: Math.round(median(r.rawRestoreTimes)),
    kilnRestoreToFirstExecMedianMs: Math.round(median(r.kilnRestoreMs)),
    restoreRatio: +(median(r.kilnRestoreMs) / median(r.rawRestoreTimes)).toFixed(3),
    forkCount: forkN,
    rawForkWallMs: Math.round(f.rawForkMs),
    kilnForkWallMs: Math.round(f.kilnForkMs),
    rawPssPerCloneMB: +(avg(f.rawPss) / 1e6).toFixed(1),
    kilnPssPerCloneMB: +(avg(f.kilnPss) / 1e6).toFixed(1),
    pssTargetMB: 100,
  };
}

function print(res: ReturnType<typeof summarize>): void {
  console.log(`bench/snapshot (TCG, 512 MiB guest, median of ${runs}; raw = plain QEMU over QMP)`);
  console.log(
    `  source pause during snapshot   raw stop+save+cont ${res.rawSavePauseMedianMs} ms   kiln ${res.kilnSnapshotPauseMedianMs} ms   ratio ${res.pauseRatio} (target <= 1.2)`,
  );
  console.log(
    `  whole snapshot call (kiln)     ${res.kilnSnapshotCallMedianMs} ms (pause + moving RAM into a file + hashes)`,
  );
  console.log(
    `  restore -> first exec          raw (agent answers) ${res.rawRestoreToAgentMedianMs} ms   kiln ${res.kilnRestoreToFirstExecMedianMs} ms   ratio ${res.restoreRatio}`,
  );
  console.log(
    `  fork of ${forkN}                     raw ${res.rawForkWallMs} ms   kiln ${res.kilnForkWallMs} ms`,
  );
  console.log(
    `  PSS per clone                  raw ${res.rawPssPerCloneMB} MB   kiln ${res.kilnPssPerCloneMB} MB (target <= 100)`,
  );
}

async function main(): Promise<void> {
  const img = await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bs-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  const files = (snap: SnapshotView): SnapshotFiles => snapshotFiles(root, snap.snapshotId, snap.memoryMiB);
  const b: Bench = { img, c, root, files };
  try {
    const tpl = await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
    const tplSnap = await c.getSnapshot(tpl.snapshotId ?? '');
    const src = await c.createSandbox({ template: 'base', timeoutS: 3600 });
    await c.exec(src.sandboxId, 'echo state > /home/user/f');
    const pause = await measurePause(b, tplSnap, src.sandboxId);
    const restore = await measureRestore(b, pause.snap);
    const res = summarize(pause, restore, await measureFork(b, pause.snap, src.sandboxId));
    if (json) console.log(JSON.stringify(res));
    else print(res);
  } finally {
    await kilnd.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
