/**
 * stopDaemon against stand-in daemons (a child process with the state dir's pid file): it returns
 * only once the process is gone, not when its socket goes quiet; one that outlives the wait is a
 * `timeout` naming its pid; no pid file, nothing to stop.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { stopDaemon } from './daemon-control.ts';

/** A child that, on SIGTERM, takes `lingerMs` to exit (as kilnd tearing down after closing its socket). */
async function standIn(dir: string, lingerMs: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `process.on('SIGTERM', () => setTimeout(() => process.exit(0), ${lingerMs})); setInterval(() => {}, 1000); console.log('up');`,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  await once(child.stdout, 'data');
  await writeFile(join(dir, 'kilnd.pid'), `${child.pid}\n`);
  return child;
}

describe('stopDaemon', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-stop-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('returns once the daemon has exited, not while it is still tearing down', async () => {
    const child = await standIn(dir, 800);
    const exited = once(child, 'exit');
    assert.equal(await stopDaemon(dir), true);
    assert.notEqual(child.exitCode, null, 'the daemon had exited when stop returned');
    await exited;
  });

  it('a daemon still alive past the wait is a timeout naming its pid', async () => {
    const child = await standIn(dir, 60_000);
    try {
      await assert.rejects(
        stopDaemon(dir, 300),
        (e: unknown) =>
          e instanceof KilnError && e.code === 'timeout' && e.message.includes(`pid ${child.pid}`),
      );
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });

  it('no pid file: nothing to stop', async () => {
    assert.equal(await stopDaemon(join(dir, 'nowhere')), false);
  });
});
