/**
 * A filesystem-only pause through the unmodified e2b SDK against a real kilnd and real guests:
 * `sandbox.pause({keepMemory: false})` (body `{memory: false}`) keeps the disk only, and
 * `Sandbox.connect` resumes it by booting a new guest on that disk: a new boot_id, the files
 * written before the pause, no process of the old boot, the same envd access token and env.
 * A memory pause of the rebooted sandbox then keeps its processes (its RAM is laid out like a
 * restore's). `lifecycle.onTimeout: {action: 'pause', keepMemory: false}` pauses the same way.
 * `Sandbox.connect(id, {onResume: 'reboot'})` (body `{memory: false}`) boots a memory pause
 * afresh on its disk the same way, its memory image left as it is.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import { ownQemus, removeStateDir, useKilnE2bEnv } from '../helpers/kilnd.ts';

const BOOT_ID = 'cat /proc/sys/kernel/random/boot_id';

describe('filesystem-only pause through the e2b SDK (real guests)', { timeout: 1_200_000 }, () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    state = await mkdtemp('/tmp/kiln-fspause-');
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    delete process.env['E2B_DEBUG'];
    delete process.env['E2B_DOMAIN'];
    useKilnE2bEnv(env);
  });
  after(() => removeStateDir(env, state));

  const run = async (sbx: Sandbox, cmd: string): Promise<string> =>
    (await sbx.commands.run(cmd, { timeoutMs: 120_000 })).stdout.trim();

  it('pause({keepMemory: false}) + connect: a new boot, files kept, processes gone, same token', async () => {
    const sbx = await Sandbox.create('base', { envs: { GREETING: 'hi' }, timeoutMs: 600_000 });
    const bootBefore = await run(sbx, BOOT_ID);
    await sbx.files.write('/home/user/kept.txt', 'written before the pause');
    const bg = await sbx.commands.run('sleep 3000', { background: true, timeoutMs: 0 });
    await bg.disconnect();
    assert.match(await run(sbx, 'pgrep -x sleep || true'), /^\d+$/, 'the background process runs');

    assert.equal(await sbx.pause({ keepMemory: false }), true);
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused');
    assert.deepEqual(ownQemus(state), [], 'no VM while paused');
    assert.equal(await sbx.pause({ keepMemory: false }), false, 'already paused');

    const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
    assert.notEqual(await run(back, BOOT_ID), bootBefore, 'the guest booted afresh');
    assert.equal(await back.files.read('/home/user/kept.txt'), 'written before the pause');
    assert.equal(await run(back, 'pgrep -x sleep || echo none'), 'none', 'no process of the old boot');
    assert.equal(await run(back, 'echo $GREETING'), 'hi', 'the env of its create');
    // The handle made before the pause (the same envd access token) works on the new boot.
    assert.equal(await sbx.files.read('/home/user/kept.txt'), 'written before the pause');

    // A memory pause of the rebooted sandbox keeps the processes of its new boot.
    const bg2 = await back.commands.run('sleep 4000', { background: true, timeoutMs: 0 });
    await bg2.disconnect();
    const bootAfter = await run(back, BOOT_ID);
    assert.equal(await back.pause(), true);
    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
    assert.equal(await run(again, BOOT_ID), bootAfter, 'a memory pause does not reboot');
    assert.match(await run(again, 'pgrep -fx "sleep 4000" || true'), /^\d+$/, 'its process runs on');
    await again.kill();
  });

  it('onTimeout {action: pause, keepMemory: false}: the timeout pauses keeping the filesystem only', async () => {
    const sbx = await Sandbox.create('base', {
      timeoutMs: 600_000,
      lifecycle: { onTimeout: { action: 'pause', keepMemory: false } },
    });
    await sbx.files.write('/home/user/t.txt', 'timeout');
    const bootBefore = await run(sbx, BOOT_ID);
    await sbx.setTimeout(1_000);
    for (let i = 0; (await Sandbox.getInfo(sbx.sandboxId)).state !== 'paused'; i++) {
      assert.ok(i < 600, 'paused by the reaper within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
    assert.notEqual(await run(back, BOOT_ID), bootBefore, 'resumed by a new boot');
    assert.equal(await back.files.read('/home/user/t.txt'), 'timeout');
    await back.kill();
    assert.deepEqual(ownQemus(state), []);
  });

  const snapshotsRoot = (): string => join(state, 'data', 'snapshots');
  /** SHA-256 and mtime of each file of snapshot directory `dir`. */
  const fingerprint = async (dir: string): Promise<string[]> => {
    const files: string[] = [];
    for (const f of readdirSync(dir).sort()) {
      const h = createHash('sha256');
      for await (const chunk of createReadStream(join(dir, f))) h.update(chunk as Buffer);
      files.push(`${f} ${h.digest('hex')} ${statSync(join(dir, f)).mtimeMs}`);
    }
    return files;
  };

  it("connect({onResume: 'reboot'}) of a memory pause: a new boot, synced files kept, memory image untouched; a bad memory is 400", async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 600_000 });
    const bootBefore = await run(sbx, BOOT_ID);
    await sbx.files.write('/home/user/synced.txt', 'on disk before the pause');
    await run(sbx, 'sync');
    const existing = new Set(readdirSync(snapshotsRoot()));
    assert.equal(await sbx.pause(), true, 'a memory pause');
    const made = readdirSync(snapshotsRoot()).filter((d) => !existing.has(d));
    assert.equal(made.length, 1, 'the pause snapshot');
    const dir = join(snapshotsRoot(), made[0] ?? '');
    const before = await fingerprint(dir);
    assert.ok(
      before.some((l) => l.startsWith('memory ')),
      `a memory image: ${before.join(', ')}`,
    );

    const url = `${process.env['E2B_API_URL'] ?? ''}/v2/sandboxes/${sbx.sandboxId}/connect`;
    const bad = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': process.env['E2B_API_KEY'] ?? '' },
      body: JSON.stringify({ timeout: 600, memory: 'no' }),
    });
    assert.equal(bad.status, 400);
    assert.deepEqual(await bad.json(), { code: 400, message: 'memory: must be true or false, got "no"' });
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused', 'a refused body resumes nothing');

    const back = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000, onResume: 'reboot' });
    assert.notEqual(await run(back, BOOT_ID), bootBefore, 'the guest booted afresh');
    assert.equal(await back.files.read('/home/user/synced.txt'), 'on disk before the pause');
    // The handle made before the pause (the same envd access token) works on the new boot.
    assert.equal(await sbx.files.read('/home/user/synced.txt'), 'on disk before the pause');
    assert.deepEqual(await fingerprint(dir), before, 'the memory pause is neither modified nor deleted');
    await back.kill();
    assert.equal(existsSync(dir), false, 'collected with the sandbox, as any pause');
    assert.deepEqual(ownQemus(state), []);
  });
});
