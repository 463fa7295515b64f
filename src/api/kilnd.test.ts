/**
 * kilnd's start-up and shutdown without VMs: the state dir lock (a second daemon is refused,
 * in-process and as a process), a start that fails after opening its ports leaves nothing behind,
 * the process entry exits non-zero on a failed start, and a daemon whose log cannot be written
 * (ENOSPC) keeps running.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { nullLogger } from '../core/log.ts';
import { KilnClient } from '../sdk/client.ts';
import { acquireStateLock } from '../store/state-lock.ts';
import { startKilnd } from './kilnd.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

/** A TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) =>
    s.close(() => {
      r();
    }),
  );
  return port;
}

/** Resolves once something can listen on `port` again (throws EADDRINUSE otherwise). */
async function canListen(port: number): Promise<void> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, '127.0.0.1', resolve);
  });
  await new Promise<void>((r) =>
    s.close(() => {
      r();
    }),
  );
}

/** Runs kilnd's process entry on `state` until it exits; returns its status and stderr. */
async function runMain(
  env: NodeJS.ProcessEnv,
  stdio: 'pipe' | number = 'pipe',
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', stdio, stdio] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('kilnd start-up', { timeout: 120_000 }, () => {
  let root: string;
  let cacheDir: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kilnd-'));
    cacheDir = join(root, 'cache');
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  const envFor = (stateDir: string): NodeJS.ProcessEnv => ({
    ...process.env,
    KILN_STATE_DIR: stateDir,
    KILN_CACHE_DIR: cacheDir,
    KILN_E2B_API_PORT: '0',
    KILN_E2B_SANDBOX_PORT: '0',
  });

  it('a start that fails after listening releases its ports, socket, lock and files', async () => {
    const stateDir = join(root, 'fail');
    await mkdir(stateDir, { recursive: true });
    // A directory where e2b.json goes: writing it fails after both TCP ports listen.
    await mkdir(join(stateDir, 'e2b.json'));
    const [apiPort, sandboxPort] = [await freePort(), await freePort()];
    await assert.rejects(
      startKilnd({ stateDir, cacheDir, log: nullLogger, e2bApiPort: apiPort, e2bSandboxPort: sandboxPort }),
      { code: 'EISDIR' },
    );
    await canListen(apiPort);
    await canListen(sandboxPort);
    const left = await readdir(stateDir);
    assert.deepEqual(
      left.filter((f) => /tmp|kilnd\.sock|kilnd\.pid/.test(f)),
      [],
      `no socket, pid file or temp file left: ${left.join(' ')}`,
    );
    acquireStateLock(join(stateDir, 'kilnd.lock')).release();
  });

  it('the process entry exits with status 1 when the start fails', async () => {
    const stateDir = join(root, 'fail');
    const r = await runMain(envFor(stateDir));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /EISDIR/);
    assert.equal(existsSync(join(stateDir, 'kilnd.sock')), false);
  });

  it('a second daemon on the same state dir is refused with conflict naming the holder; the first keeps serving', async () => {
    const stateDir = join(root, 'two');
    const k = await startKilnd({ stateDir, cacheDir, log: nullLogger, e2bApiPort: 0, e2bSandboxPort: 0 });
    try {
      await assert.rejects(
        startKilnd({ stateDir, cacheDir, log: nullLogger, e2bApiPort: 0, e2bSandboxPort: 0 }),
        {
          code: 'conflict',
          message: /already runs on this state dir \(this process holds .*kilnd\.lock\)/,
        },
      );
      const r = await runMain(envFor(stateDir));
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`already runs on this state dir \\(pid ${process.pid} holds`));
      const c = new KilnClient({ socketPath: k.socketPath });
      assert.equal((await c.health()).ok, true, 'the first daemon still answers');
    } finally {
      await k.close();
    }
    assert.equal(existsSync(join(stateDir, 'kilnd.sock')), false);
    assert.equal(existsSync(join(stateDir, 'kilnd.pid')), false);
    // Stopped: the lock is free again.
    const again = await startKilnd({ stateDir, cacheDir, log: nullLogger, e2bApiPort: 0, e2bSandboxPort: 0 });
    await again.close();
  });

  it('a daemon whose log cannot be written (stdout and stderr on /dev/full) keeps serving and stops cleanly', async () => {
    const stateDir = join(root, 'full-log');
    const full = openSync('/dev/full', 'w');
    const child = spawn(process.execPath, [MAIN], {
      env: { ...envFor(stateDir), NODE_DEBUG: 'net,http' }, // plenty of writes to stderr too
      stdio: ['ignore', full, full],
    });
    closeSync(full);
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    try {
      const c = new KilnClient({ socketPath: join(stateDir, 'kilnd.sock') });
      for (let i = 0; ; i++) {
        const ok = await c.health().then(
          () => true,
          () => false,
        );
        if (ok) break;
        assert.equal(child.exitCode, null, 'kilnd died while starting');
        assert.ok(i < 300, 'kilnd did not answer within 30 s');
        await new Promise((r) => setTimeout(r, 100));
      }
      // Every request logs a line (and NODE_DEBUG writes more): all of them fail with ENOSPC.
      for (let i = 0; i < 50; i++) assert.equal((await c.health()).ok, true);
      assert.equal(child.exitCode, null, 'kilnd survived its log failing');
    } finally {
      child.kill('SIGTERM');
    }
    assert.deepEqual(await exited, [0, null]);
  });
});
