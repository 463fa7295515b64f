/**
 * bench/sdk: the official `e2b` SDK against kilnd's E2B API and envd proxy, beside the raw
 * baselines of bench/create and bench/exec measured in the same run, interleaved:
 * 1. create: `Sandbox.create('base')` -> first `commands.run` output, vs bench/create's two
 *    figures (raw QEMU restore of the template snapshot until the agent answers; kiln's native
 *    API create -> first exec output).
 * 2. exec: `commands.run('true')` on a live sandbox through the envd proxy, vs bench/exec's
 *    figure (the same SDK call straight to the guest agent's forwarded port) and a bare GET.
 * Target: SDK figures <= 1.2x their baselines (p50).
 *
 *   scripts/node bench/sdk.ts [--runs N] [--execs N] [--json]
 */
import { Agent } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { Sandbox } from 'e2b';
import { createToFirstExecMs, httpGet } from './kiln-measure.ts';
import { rawRestoreMs, snapshotFiles } from './raw-qemu.ts';
import { benchArgs, percentile } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { startE2bStub } from '../test/helpers/e2b-stub.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';

const { runs, execs, json } = benchArgs({ runs: 10, execs: 200 });

const stats = (xs: number[]): { p50: number; p99: number } => ({
  p50: +percentile(xs, 50).toFixed(1),
  p99: +percentile(xs, 99).toFixed(1),
});

type Kilnd = Awaited<ReturnType<typeof startKilnd>>;
type Opts = { apiUrl: string; sandboxUrl: string; apiKey: string };
type Stats = { p50: number; p99: number };

/** One create through the SDK until the first command's output. */
async function sdkCreateMs(o: Opts): Promise<number> {
  const t0 = performance.now();
  const s = await Sandbox.create('base', o);
  const r = await s.commands.run('echo ready');
  const ms = performance.now() - t0;
  if (r.stdout !== 'ready\n') throw new Error(`unexpected output ${r.stdout}`);
  await s.kill();
  return ms;
}

/** Step 1: creates, raw restore vs native API vs SDK, interleaved after one warm-up of each. */
async function measureCreates(
  img: Awaited<ReturnType<typeof ensureDefaultImage>>,
  c: KilnClient,
  o: Opts,
  snap: ReturnType<typeof snapshotFiles>,
): Promise<{ raw: number[]; native: number[]; sdk: number[] }> {
  const rawMs = (): Promise<number> => rawRestoreMs(img, snap);
  const viaNative = (): Promise<number> => createToFirstExecMs(c);
  const raw: number[] = [];
  const native: number[] = [];
  const sdk: number[] = [];
  await rawMs();
  await viaNative();
  await sdkCreateMs(o); // warm every path once
  for (let i = 0; i < runs; i++) {
    raw.push(await rawMs());
    native.push(await viaNative());
    sdk.push(await sdkCreateMs(o));
    if (!json)
      process.stderr.write(
        `create ${i + 1}/${runs}: raw ${raw.at(-1)?.toFixed(0)} ms, native ${native.at(-1)?.toFixed(0)} ms, sdk ${sdk.at(-1)?.toFixed(0)} ms\n`,
      );
  }
  return { raw, native, sdk };
}

/** Step 2: one live sandbox; the SDK through kiln's proxy, and the SDK straight to its agent. */
async function measureExecs(
  kilnd: Kilnd,
  o: Opts,
): Promise<{ direct: number[]; proxied: number[]; bare: number[] }> {
  const direct: number[] = [];
  const proxied: number[] = [];
  const bare: number[] = [];
  const s = await Sandbox.create('base', { ...o, timeoutMs: 3600_000 });
  const token = (await kilnd.svc.agent(s.sandboxId)).sandbox.accessToken;
  const agentUrl = (await kilnd.svc.agent(s.sandboxId)).baseUrl;
  const stub = await startE2bStub({ envdAccessToken: token });
  const straight = await Sandbox.connect(s.sandboxId, {
    apiUrl: stub.url,
    sandboxUrl: agentUrl,
    apiKey: 'unused',
  });
  const keep = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 10; i++) {
      await s.commands.run('true');
      await straight.commands.run('true');
      await httpGet(`${agentUrl}/health`, keep);
    }
    for (let i = 0; i < execs; i++) {
      let t0 = performance.now();
      await httpGet(`${agentUrl}/health`, keep);
      bare.push(performance.now() - t0);
      t0 = performance.now();
      await straight.commands.run('true');
      direct.push(performance.now() - t0);
      t0 = performance.now();
      await s.commands.run('true');
      proxied.push(performance.now() - t0);
    }
  } finally {
    keep.destroy();
    stub.server.close();
    await s.kill();
  }
  return { direct, proxied, bare };
}

/** The figures: p50/p99 per path and the ratios against the baselines. */
function summarize(m: Awaited<ReturnType<typeof measureCreates>> & Awaited<ReturnType<typeof measureExecs>>) {
  const { raw, native, sdk, bare, direct, proxied } = m;
  return {
    bench: 'sdk',
    runs,
    execs,
    create: {
      rawRestoreToAgent: stats(raw),
      nativeCreateToFirstExec: stats(native),
      sdkCreateToFirstRun: stats(sdk),
      ratioSdkToNativeP50: +(percentile(sdk, 50) / percentile(native, 50)).toFixed(3),
      ratioSdkToRawP50: +(percentile(sdk, 50) / percentile(raw, 50)).toFixed(3),
    },
    exec: {
      bareGet: stats(bare),
      sdkRunDirect: stats(direct),
      sdkRunViaKiln: stats(proxied),
      ratioP50: +(percentile(proxied, 50) / percentile(direct, 50)).toFixed(3),
      ratioP99: +(percentile(proxied, 99) / percentile(direct, 99)).toFixed(3),
    },
    target: 1.2,
  };
}

function print(res: ReturnType<typeof summarize>): void {
  const row = (label: string, x: Stats): string =>
    `  ${label.padEnd(70)} p50 ${String(x.p50).padStart(7)} ms   p99 ${String(x.p99).padStart(7)} ms`;
  console.log(`bench/sdk (TCG, 512 MiB template; ${runs} creates and ${execs} runs, interleaved)`);
  console.log(row('raw QEMU restore -> agent answers (bench/create baseline)', res.create.rawRestoreToAgent));
  console.log(
    row('kiln native API create -> first exec output (bench/create)', res.create.nativeCreateToFirstExec),
  );
  console.log(row("e2b Sandbox.create('base') -> first commands.run output", res.create.sdkCreateToFirstRun));
  console.log(
    `  ratio sdk/native ${res.create.ratioSdkToNativeP50}, sdk/raw ${res.create.ratioSdkToRawP50} at p50 (target <= ${res.target} vs native)`,
  );
  console.log(row('bare HTTP GET /health to the forwarded agent port', res.exec.bareGet));
  console.log(
    row("e2b commands.run('true') straight to the agent (bench/exec baseline)", res.exec.sdkRunDirect),
  );
  console.log(row("e2b commands.run('true') through kiln's envd proxy", res.exec.sdkRunViaKiln));
  console.log(
    `  ratio proxy/direct p50 ${res.exec.ratioP50}, p99 ${res.exec.ratioP99} (target <= ${res.target})`,
  );
}

async function main(): Promise<void> {
  const img = await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bs-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
    e2bApiPort: 0,
    e2bSandboxPort: 0,
  });
  let res: ReturnType<typeof summarize>;
  try {
    const c = new KilnClient({ socketPath: kilnd.socketPath });
    const tpl = await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
    const { key } = await c.createApiKey('bench');
    const o = { apiUrl: kilnd.e2bApiUrl, sandboxUrl: kilnd.e2bSandboxUrl, apiKey: key };
    const creates = await measureCreates(img, c, o, snapshotFiles(root, tpl.snapshotId ?? '', 512));
    res = summarize({ ...creates, ...(await measureExecs(kilnd, o)) });
  } finally {
    await kilnd.close();
    await rm(root, { recursive: true, force: true });
  }
  if (json) console.log(JSON.stringify(res));
  else print(res);
}

await main();
