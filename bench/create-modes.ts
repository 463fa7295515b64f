/**
 * bench/create's modes for issue 15 (run by bench/create.ts):
 * - `--concurrency N`: N creates through the official e2b SDK (`Sandbox.create` until the first
 *   `commands.run` output) one after another, then N at once: p50/p99 of each, and the
 *   throughput of the parallel run against the sequential one (target >= 1.6x: both cores used).
 *   With `--warm-pool M` the pool (size M) is on for both.
 * - `--warm-pool N` alone: create -> first exec output (native API) with a warm pool of N
 *   (refilled before each run), beside an exec alone on a live sandbox and the same create
 *   without the pool, interleaved. Target: pooled create-to-first-exec within 1.3x of the exec.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { Sandbox } from 'e2b';
import { createToFirstExecMs } from './kiln-measure.ts';
import { median, percentile } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { sleep } from '../src/core/proc.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';
import { killOwnQemus, purgeHost } from '../test/helpers/kilnd.ts';

type Kilnd = Awaited<ReturnType<typeof startKilnd>>;

/** A kilnd in a temp state dir with template `base` and a warm pool of `pool` for it. */
async function withKilnd<T>(pool: number, fn: (k: Kilnd, c: KilnClient) => Promise<T>): Promise<T> {
  await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bcm-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
    e2bApiPort: 0,
    e2bSandboxPort: 0,
    warmPool: pool,
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  try {
    await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
    return await fn(kilnd, c);
  } finally {
    // The pool's VMs outlive kilnd by design: drained first, and anything left of this state
    // dir is killed, so the bench leaves nothing running.
    await c
      .setWarmPool('base', 0)
      .then(() => poolReady(c, 0))
      .catch(() => undefined);
    await kilnd.close();
    killOwnQemus(root);
    await purgeHost(root);
    await rm(root, { recursive: true, force: true });
  }
}

/** Waits until `base`'s warm pool holds `n` ready members and none starting (n = 0: drained). */
async function poolReady(c: KilnClient, n: number): Promise<void> {
  for (let i = 0; i < 1500; i++) {
    const p = await c.warmPool('base');
    if (p.ready === n && p.starting === 0) return;
    await sleep(100);
  }
  throw new Error(`the warm pool did not reach ${n} ready members`);
}

const round = (xs: number[]): number[] => xs.map((x) => Math.round(x));
const p = (xs: number[], q: number): number => Math.round(percentile(xs, q));

/** `--concurrency n`: sequential vs parallel SDK creates. */
export async function concurrencyBench(n: number, pool: number, json: boolean): Promise<void> {
  const res = await withKilnd(pool, async (k, c) => {
    const { key } = await c.createApiKey('bench');
    const o = { apiUrl: k.e2bApiUrl, sandboxUrl: k.e2bSandboxUrl, apiKey: key, timeoutMs: 600_000 };
    const one = async (): Promise<{ ms: number; s: Sandbox }> => {
      const t0 = performance.now();
      const s = await Sandbox.create('base', o);
      const r = await s.commands.run('echo ready');
      if (r.stdout !== 'ready\n') throw new Error(`unexpected output ${r.stdout}`);
      return { ms: performance.now() - t0, s };
    };
    const killAll = (xs: { s: Sandbox }[]): Promise<unknown> => Promise.all(xs.map((x) => x.s.kill()));
    if (pool > 0) await poolReady(c, pool);
    await killAll([await one()]); // warm-up
    if (pool > 0) await poolReady(c, pool);
    let t0 = performance.now();
    const seq: { ms: number; s: Sandbox }[] = [];
    for (let i = 0; i < n; i++) seq.push(await one());
    const seqWall = performance.now() - t0;
    await killAll(seq);
    if (pool > 0) await poolReady(c, pool);
    t0 = performance.now();
    const par = await Promise.all(Array.from({ length: n }, one));
    const parWall = performance.now() - t0;
    await killAll(par);
    const seqMs = seq.map((x) => x.ms);
    const parMs = par.map((x) => x.ms);
    return {
      bench: 'create --concurrency',
      creates: n,
      warmPool: pool,
      sequential: { p50: p(seqMs, 50), p99: p(seqMs, 99), wallMs: Math.round(seqWall) },
      parallel: { p50: p(parMs, 50), p99: p(parMs, 99), wallMs: Math.round(parWall), ms: round(parMs) },
      throughputRatio: +(seqWall / parWall).toFixed(2),
      target: 1.6,
    };
  });
  if (json) {
    console.log(JSON.stringify(res));
    return;
  }
  console.log(
    `bench/create --concurrency ${n} (TCG, e2b SDK create -> first commands.run, warm pool ${pool})`,
  );
  console.log(
    `  one after another: p50 ${res.sequential.p50} ms, p99 ${res.sequential.p99} ms, all ${res.sequential.wallMs} ms`,
  );
  console.log(
    `  ${n} at once:        p50 ${res.parallel.p50} ms, p99 ${res.parallel.p99} ms, all ${res.parallel.wallMs} ms`,
  );
  console.log(`  throughput parallel/sequential ${res.throughputRatio}x (target >= ${res.target})`);
}

/** `--warm-pool n`: pooled create-to-first-exec vs an exec alone vs an unpooled create. */
export async function warmPoolBench(n: number, runs: number, json: boolean): Promise<void> {
  const res = await withKilnd(n, async (_k, c) => {
    const live = await c.createSandbox({ template: 'base', timeoutS: 3600 });
    const execMs = async (): Promise<number> => {
      const t0 = performance.now();
      let out = '';
      await c.exec(live.sandboxId, 'echo ready', { onStdout: (b) => (out += b.toString()) });
      if (out !== 'ready\n') throw new Error(`unexpected output ${out}`);
      return performance.now() - t0;
    };
    const pooled: number[] = [];
    const exec: number[] = [];
    await poolReady(c, n);
    await createToFirstExecMs(c); // warm-up
    await execMs();
    for (let i = 0; i < runs; i++) {
      await poolReady(c, n);
      pooled.push(await createToFirstExecMs(c));
      exec.push(await execMs());
      if (!json)
        process.stderr.write(
          `run ${i + 1}/${runs}: pooled create ${Math.round(pooled.at(-1) ?? 0)} ms, exec ${Math.round(exec.at(-1) ?? 0)} ms\n`,
        );
    }
    await c.setWarmPool('base', 0);
    await poolReady(c, 0);
    const unpooled: number[] = [];
    for (let i = 0; i < runs; i++) unpooled.push(await createToFirstExecMs(c));
    await c.killSandbox(live.sandboxId);
    return {
      bench: 'create --warm-pool',
      warmPool: n,
      runs,
      pooledCreateToFirstExecMedianMs: Math.round(median(pooled)),
      execAloneMedianMs: Math.round(median(exec)),
      unpooledCreateToFirstExecMedianMs: Math.round(median(unpooled)),
      ratioPooledToExec: +(median(pooled) / median(exec)).toFixed(2),
      target: 1.3,
      pooledMs: round(pooled),
      execMs: round(exec),
      unpooledMs: round(unpooled),
    };
  });
  if (json) {
    console.log(JSON.stringify(res));
    return;
  }
  console.log(`bench/create --warm-pool ${n} (TCG, 512 MiB template, native API, median of ${runs})`);
  console.log(
    `  create -> first exec, warm pool on    ${res.pooledCreateToFirstExecMedianMs} ms   ${res.pooledMs.join(' ')}`,
  );
  console.log(`  exec alone on a live sandbox         ${res.execAloneMedianMs} ms   ${res.execMs.join(' ')}`);
  console.log(
    `  create -> first exec, no pool        ${res.unpooledCreateToFirstExecMedianMs} ms   ${res.unpooledMs.join(' ')}`,
  );
  console.log(`  ratio pooled create / exec ${res.ratioPooledToExec}   (target <= ${res.target})`);
}
