import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { acquireStateLock, lockHolder } from './state-lock.ts';

const LOCK_MODULE = new URL('./state-lock.ts', import.meta.url).href;

describe('state dir lock', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-lock-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is exclusive within one process, names this process, and is taken again once released', () => {
    const path = join(dir, 'one.lock');
    const a = acquireStateLock(path);
    assert.equal(lockHolder(path), process.pid);
    assert.throws(() => acquireStateLock(path), {
      code: 'conflict',
      message: /already runs on this state dir \(this process holds .*one\.lock\); stop it first/,
    });
    a.release();
    a.release(); // idempotent
    assert.equal(lockHolder(path), undefined);
    acquireStateLock(path).release();
  });

  it('is exclusive across processes, names the holder pid, and is freed by kill -9 of the holder', async () => {
    const path = join(dir, 'two.lock');
    const child = spawn(
      process.execPath,
      [
        '--expose-gc',
        '--input-type=module',
        '-e',
        // The child keeps no reference to its lock, and collects garbage: the lock must hold.
        `const { acquireStateLock } = await import(${JSON.stringify(LOCK_MODULE)});
         acquireStateLock(${JSON.stringify(path)}); globalThis.gc(); process.stdout.write('held\\n');
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const [first] = (await once(child.stdout, 'data')) as [Buffer];
      assert.equal(first.toString(), 'held\n');
      assert.throws(
        () => acquireStateLock(path),
        (e: { code?: string; message?: string; details?: unknown }) => {
          assert.equal(e.code, 'conflict');
          assert.match(e.message ?? '', new RegExp(`pid ${child.pid ?? 0} holds`));
          assert.deepEqual(e.details, { lock: path, pid: child.pid });
          return true;
        },
      );
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
    // The kernel dropped the dead process's lock: no stale lock file to clean up.
    const l = acquireStateLock(path);
    assert.equal(lockHolder(path), process.pid);
    l.release();
  });
});
