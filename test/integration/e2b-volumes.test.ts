/**
 * Volumes through the unmodified `e2b` SDK against a real kilnd (isolated networks) with real
 * QEMU guests: a volume mounted by one sandbox and then another shows the same files; the volume
 * content API reads what a sandbox wrote and a sandbox sees what it wrote; a mounted volume
 * cannot be deleted; the mount survives pause/resume; a guest reaches no volume it did not mount.
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Sandbox, Volume } from 'e2b';
import { removeStateDir, useKilnE2bEnv } from '../helpers/kilnd.ts';

/** Connects from the guest to the volume port of `index`; prints what the SFTP server answers to INIT. */
const DIAL = `
import socket, sys
s = socket.create_connection(('192.0.2.1', 20490 + int(sys.argv[1])), timeout=10)
s.sendall(bytes([0,0,0,5, 1, 0,0,0,3]))
try:
    d = s.recv(64)
except Exception as e:
    d = b''
print('answer' if len(d) > 0 else 'closed')
`;

let state: string;
let env: NodeJS.ProcessEnv;

describe('volumes through the e2b SDK (real guests, isolated kilnd)', { timeout: 1_200_000 }, () => {
  before(async () => {
    state = await mkdtemp('/tmp/kiln-e2bvol-');
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    delete process.env['E2B_DOMAIN'];
    delete process.env['E2B_DEBUG'];
    useKilnE2bEnv(env);
    await (await Sandbox.create({ requestTimeoutMs: 600_000 })).kill();
  });
  after(async () => {
    await removeStateDir(env, state);
  });

  it('two sandboxes one after another share files; the content API reads and writes them; mounted volumes are not deleted; pause/resume keeps the mount', async () => {
    const vol = await Volume.create('shared-data');
    assert.deepEqual(
      (await Volume.list()).map((v) => v.name),
      ['shared-data'],
    );
    const a = await Sandbox.create({ volumeMounts: { '/mnt/data': vol } });
    assert.deepEqual((await a.getInfo()).volumeMounts, [{ name: 'shared-data', path: '/mnt/data' }]);
    await a.commands.run('mkdir -p /mnt/data/sub && echo from-a > /mnt/data/sub/a.txt');
    assert.equal(await vol.readFile('/sub/a.txt'), 'from-a\n');
    await assert.rejects(Volume.destroy(vol.volumeId), /is mounted by sandbox/);
    await vol.writeFile('/api.txt', 'from-api');
    assert.equal((await a.commands.run('cat /mnt/data/api.txt')).stdout, 'from-api');
    await a.pause();
    await a.connect();
    assert.equal((await a.commands.run('cat /mnt/data/sub/a.txt')).stdout, 'from-a\n');
    await a.commands.run('echo after-resume > /mnt/data/r.txt');
    assert.equal(await vol.readFile('r.txt'), 'after-resume\n');
    // A restore of a snapshot and a fork carry the mount: their sshfs reconnects as their own.
    const snap = await a.createSnapshot();
    const restored = await Sandbox.create(snap.snapshotId);
    assert.deepEqual((await restored.getInfo()).volumeMounts, [{ name: 'shared-data', path: '/mnt/data' }]);
    await restored.commands.run('echo from-restored > /mnt/data/restored.txt');
    assert.equal(await vol.readFile('restored.txt'), 'from-restored\n');
    const [fork] = await Sandbox.fork(a.sandboxId, { count: 1 });
    assert.ok(fork instanceof Sandbox);
    assert.equal((await fork.commands.run('cat /mnt/data/restored.txt')).stdout, 'from-restored\n');
    for (const x of [fork, restored, a]) await x.kill();
    await Sandbox.deleteSnapshot(snap.snapshotId);
    const b = await Sandbox.create({ volumeMounts: { '/data': 'shared-data' } });
    assert.equal((await b.commands.run('cat /data/sub/a.txt /data/api.txt')).stdout, 'from-a\nfrom-api');
    const names = (await vol.list('/')).map((e) => e.name).sort();
    assert.deepEqual(names, ['api.txt', 'r.txt', 'restored.txt', 'sub']);
    await b.kill();
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });

  it('two sandboxes mount one volume at once; a guest reaches only the volumes it mounted', async () => {
    const vol = await Volume.create('mine');
    const a = await Sandbox.create({ volumeMounts: { '/mnt/v': vol } });
    const d = await Sandbox.create({ volumeMounts: { '/srv/shared': 'mine' } });
    await a.commands.run('echo one > /mnt/v/x');
    assert.equal((await d.commands.run('cat /srv/shared/x')).stdout, 'one\n');
    await d.commands.run('echo two > /srv/shared/x');
    assert.equal((await a.commands.run('cat /mnt/v/x')).stdout, 'two\n');
    await d.kill();
    const c = await Sandbox.create();
    await a.files.write('/tmp/dial.py', DIAL);
    await c.files.write('/tmp/dial.py', DIAL);
    // Index 0 answers for the sandbox that mounts it; index 1 (nothing there) is closed.
    assert.equal((await a.commands.run('python3 /tmp/dial.py 0')).stdout.trim(), 'answer');
    assert.equal((await a.commands.run('python3 /tmp/dial.py 1')).stdout.trim(), 'closed');
    // A sandbox without mounts dialling the same port is refused: the source address decides.
    assert.equal((await c.commands.run('python3 /tmp/dial.py 0')).stdout.trim(), 'closed');
    await a.kill();
    await c.kill();
    await Volume.destroy(vol.volumeId);
  });
});
