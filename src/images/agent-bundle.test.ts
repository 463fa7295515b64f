import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundleAgent } from './agent-bundle.ts';

test('the bundled agent is one self-contained file that starts and serves /health', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bundle-'));
  const file = join(dir, 'agent.mjs');
  await writeFile(file, await bundleAgent());
  // Outside node_modules: the bundle must not need anything but Node itself.
  const child = spawn(process.execPath, [file], {
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
