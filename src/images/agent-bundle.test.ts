import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { bundleAgent } from './agent-bundle.ts';

const guestFile = (name: string): URL => new URL(`./guest-files/${name}`, import.meta.url);

/** The flags the init script gives the agent's Node (`.../node FLAGS /opt/kiln/agent.mjs`). */
async function agentFlags(script: string): Promise<string[]> {
  const m = /\/opt\/kiln\/bin\/node ((?:--[a-z0-9-]+ )*)\/opt\/kiln\/agent\.mjs/.exec(
    await readFile(guestFile(script), 'utf8'),
  );
  assert.ok(m, `${script} starts /opt/kiln/bin/node ... /opt/kiln/agent.mjs`);
  return (m[1] ?? '').trim().split(' ').filter(Boolean);
}

test("both init scripts give the agent's Node the same flags, and this Node has what they promise", async () => {
  const flags = await agentFlags('kiln-init.sh');
  assert.deepEqual(await agentFlags('kiln-init-oci.sh'), flags);
  assert.ok(flags.includes('--jitless'), flags.join(' '));
  // This Node takes them, and --jitless leaves no WebAssembly.
  const { stdout } = await promisify(execFile)(process.execPath, [
    ...flags,
    '-e',
    'console.log(typeof WebAssembly)',
  ]);
  assert.equal(stdout.trim(), 'undefined');
  assert.doesNotMatch(
    await bundleAgent(),
    /WebAssembly/,
    'the agent needs no WebAssembly, which --jitless lacks',
  );
});

test("the bundled agent is one self-contained file that starts and serves /health, with the init script's flags", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bundle-'));
  const file = join(dir, 'agent.mjs');
  await writeFile(file, await bundleAgent());
  // Outside node_modules: the bundle must not need anything but Node itself.
  const child = spawn(process.execPath, [...(await agentFlags('kiln-init.sh')), file], {
    cwd: dir,
    env: {
      PATH: process.env['PATH'],
      KILN_AGENT_MAIN: '1',
      KILN_AGENT_PORT: '0',
      KILN_AGENT_HOST: '127.0.0.1',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    let err = '';
    const port = await new Promise<number>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        const m = /listening on (\d+)/.exec(err);
        if (m?.[1]) resolve(Number(m[1]));
      });
      child.on('exit', (code) => {
        reject(new Error(`agent exited with ${code}: ${err}`));
      });
    });
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 204);
  } finally {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
