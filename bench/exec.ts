/**
 * bench/exec: against one guest, p50/p99 of `commands.run('true')` through the guest agent (the
 * real `e2b` SDK, as users call it) beside a bare HTTP GET round trip to the same forwarded port
 * (GET /health), interleaved. Target: ratio <= 1.3.
 *
 *   scripts/node bench/exec.ts [--runs N] [--json]
 */
import { guestSpawnProgram, httpGet } from './kiln-measure.ts';
import { benchArgs, percentile } from './stats.ts';
import { bootAgentVm } from '../test/helpers/guest.ts';

const { runs, json } = benchArgs({ runs: 200 });

async function main(): Promise<void> {
  const vm = await bootAgentVm({ memoryMiB: 512 });
  const { agentUrl, sandbox: sbx, info } = vm;
  try {
    const { Agent } = await import('node:http');
    const keep = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 10; i++) {
      await sbx.commands.run('true');
      await httpGet(`${agentUrl}/health`, keep);
    }
    const run: number[] = [];
    const http: number[] = [];
    for (let i = 0; i < runs; i++) {
      let t0 = performance.now();
      await httpGet(`${agentUrl}/health`, keep);
      http.push(performance.now() - t0);
      t0 = performance.now();
      await sbx.commands.run('true');
      run.push(performance.now() - t0);
    }
    keep.destroy();
    // The floor under emulation: the same spawn (setpriv + bash -l -c true as user), timed inside
    // the guest, with no agent or network in the way.
    const floor = await sbx.commands.run(guestSpawnProgram('true'), { user: 'root', timeoutMs: 120_000 });
    const guestSpawnP50 = Number(floor.stdout.trim());
    const res = {
      bench: 'exec',
      accel: info.accel,
      runs,
      httpP50Ms: +percentile(http, 50).toFixed(2),
      httpP99Ms: +percentile(http, 99).toFixed(2),
      runP50Ms: +percentile(run, 50).toFixed(2),
      runP99Ms: +percentile(run, 99).toFixed(2),
      ratioP50: +(percentile(run, 50) / percentile(http, 50)).toFixed(2),
      target: 1.3,
      guestSpawnP50Ms: +guestSpawnP50.toFixed(2),
      agentOverheadP50Ms: +(percentile(run, 50) - guestSpawnP50).toFixed(2),
    };
    if (json) console.log(JSON.stringify(res));
    else {
      console.log(
        `bench/exec (${info.accel}, ${runs} runs, one guest): latency through the forwarded agent port`,
      );
      console.log(`  bare HTTP GET /health            p50 ${res.httpP50Ms} ms   p99 ${res.httpP99Ms} ms`);
      console.log(`  e2b commands.run('true')         p50 ${res.runP50Ms} ms   p99 ${res.runP99Ms} ms`);
      console.log(`  ratio run/GET at p50             ${res.ratioP50}   (target <= ${res.target})`);
      console.log(`  in-guest spawn of the same command (no agent)   p50 ${res.guestSpawnP50Ms} ms`);
      console.log(`  => agent + SDK + network share of run('true')   p50 ${res.agentOverheadP50Ms} ms`);
    }
  } finally {
    await vm.close();
  }
}

await main();
