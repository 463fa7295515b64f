/** Measurements of kiln itself shared by the benchmarks. */
import { readFileSync } from 'node:fs';
import { request, type Agent } from 'node:http';
import type { KilnClient } from '../src/sdk/client.ts';

/**
 * Native API create until a command's output is back, then killed: the time (ms). `parts`, if
 * given, gets the create's and the first exec's own times pushed.
 */
export async function createToFirstExecMs(
  c: KilnClient,
  template = 'base',
  parts?: { createMs: number[]; execMs: number[] },
): Promise<number> {
  const t0 = performance.now();
  const s = await c.createSandbox({ template });
  const t1 = performance.now();
  let out = '';
  await c.exec(s.sandboxId, 'echo ready', { onStdout: (b) => (out += b.toString()) });
  const ms = performance.now() - t0;
  parts?.createMs.push(t1 - t0);
  parts?.execMs.push(performance.now() - t1);
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

/**
 * The floor under emulation: a Python program that spawns `setpriv ... bash -l -c CMD` as the
 * sandbox user (uid 1000) `n` times inside the guest, with no agent or network in the way, and
 * prints the median (ms). Run it as root; the answer is its stdout.
 */
/** A command line as the agent spawns it for the default user (uid 1000): setpriv, then bash -l. */
export function asDefaultUser(cmd: string): string[] {
  return ['setpriv', '--reuid=1000', '--regid=1000', '--init-groups', '--', '/bin/bash', '-l', '-c', cmd];
}

export function guestSpawnProgram(cmd: string, n = 30): string {
  return `python3 -c "
import subprocess, time
xs = []
for i in range(${n}):
    t = time.perf_counter()
    subprocess.run([${asDefaultUser(cmd)
      .map((a) => `'${a}'`)
      .join(', ')}], stdout=subprocess.DEVNULL)
    xs.append((time.perf_counter() - t) * 1000)
xs.sort()
print(xs[len(xs) // 2])
"`;
}
