/** Measurements of kiln itself shared by the benchmarks. */
import { readFileSync } from 'node:fs';
import { request, type Agent } from 'node:http';
import type { KilnClient } from '../src/sdk/client.ts';

/** Native API create until a command's output is back, then killed: the time (ms). */
export async function createToFirstExecMs(c: KilnClient, template = 'base'): Promise<number> {
  const t0 = performance.now();
  const s = await c.createSandbox({ template });
  let out = '';
  await c.exec(s.sandboxId, 'echo ready', { onStdout: (b) => (out += b.toString()) });
  const ms = performance.now() - t0;
  if (out !== 'ready\n') throw new Error(`unexpected output ${out}`);
  await c.killSandbox(s.sandboxId);
  return ms;
}

/** The QEMU pid of a sandbox's VM (from its vm.json). */
export function vmPid(stateDir: string, id: string): number {
  return (JSON.parse(readFileSync(`${stateDir}/vms/${id}/vm.json`, 'utf8')) as { pid: number }).pid;
}

/** One GET on a kept-alive connection (as the SDK's own HTTP client does); resolves at its end. */
export function httpGet(url: string, agent: Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
}
