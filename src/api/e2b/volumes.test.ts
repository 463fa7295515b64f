/**
 * E2B volumes through the real e2b SDK against the E2B API (fake driver: no VM; the content API
 * needs none): Volume create/list/getInfo/destroy, volumeMounts at create and in getInfo, the
 * content API with the volume's token (and not without it), delete refused while mounted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuthenticationError, Sandbox, Volume, VolumeError, VolumePathNotFoundError } from 'e2b';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B API: volumes and the volume content API (fake driver, real e2b SDK)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  it('CRUD, volumeMounts at create and in getInfo, delete refused while a sandbox mounts it', async () => {
    const vol = await Volume.create('data', h.opts());
    assert.match(vol.volumeId, /^vol-/);
    assert.equal(vol.token.length, 48);
    assert.deepEqual(await Volume.list(h.opts()), [{ volumeId: vol.volumeId, name: 'data' }]);
    assert.equal((await Volume.getInfo(vol.volumeId, h.opts())).token, vol.token);
    await assert.rejects(Volume.create('data', h.opts()), /409: a volume named "data" already exists/);
    const sbx = await Sandbox.create('base', { ...h.opts(), volumeMounts: { '/mnt/data': vol } });
    assert.deepEqual((await sbx.getInfo()).volumeMounts, [{ name: 'data', path: '/mnt/data' }]);
    assert.deepEqual((await Sandbox.getInfo(sbx.sandboxId, h.opts())).volumeMounts, [
      { name: 'data', path: '/mnt/data' },
    ]);
    await assert.rejects(
      Volume.destroy(vol.volumeId, h.opts()),
      (e: Error) => e instanceof VolumeError && e.message.includes(`is mounted by sandbox ${sbx.sandboxId}`),
    );
    await assert.rejects(
      Sandbox.create('base', { ...h.opts(), volumeMounts: { 'relative/path': 'data' } }),
      /400: volumeMounts\[0\]\.path: must be an absolute path/,
    );
    await assert.rejects(
      Sandbox.create('base', { ...h.opts(), volumeMounts: { '/x': 'nope' } }),
      /404: volume "nope" does not exist/,
    );
    await sbx.kill();
    assert.equal(await Volume.destroy(vol.volumeId, h.opts()), true);
    assert.equal(await Volume.destroy(vol.volumeId, h.opts()), false);
  });

  it('the content API reads, writes, lists, stats, changes and removes with the volume token only', async () => {
    const vol = await Volume.create('files', h.opts());
    const c = { apiUrl: h.apiUrl };
    const w = await vol.writeFile('/dir/a.txt', 'hello', c);
    assert.equal(w.path, '/dir/a.txt');
    assert.equal(w.size, 5);
    assert.equal(await vol.readFile('dir/a.txt', c), 'hello');
    assert.deepEqual(
      new TextDecoder().decode(await vol.readFile('/dir/a.txt', { ...c, format: 'bytes' })),
      'hello',
    );
    assert.equal((await vol.makeDir('/dir/sub', c)).type, 'directory');
    assert.deepEqual(
      (await vol.list('/', { ...c, depth: 2 })).map((e) => [e.path, e.type]),
      [
        ['/dir', 'directory'],
        ['/dir/a.txt', 'file'],
        ['/dir/sub', 'directory'],
      ],
    );
    assert.equal((await vol.updateMetadata('/dir/a.txt', { mode: 0o600 }, c)).mode, 0o600);
    assert.equal(await vol.exists('/dir/nope', c), false);
    await assert.rejects(vol.readFile('/nope', c), VolumePathNotFoundError);
    await assert.rejects(vol.readFile('/../etc/passwd', c), /400: path: .*leaves the volume/);
    await vol.remove('/dir', c);
    assert.deepEqual(await vol.list('/', c), []);
    // Another volume's token, or none: 401, and nothing is read.
    const other = await Volume.create('other', h.opts());
    await vol.writeFile('/secret', 's', c);
    const stolen = new Volume(vol.volumeId, vol.name, other.token);
    await assert.rejects(stolen.readFile('/secret', c), AuthenticationError);
    const r = await h.raw('GET', `/volumecontent/${vol.volumeId}/file?path=/secret`, undefined, null);
    assert.equal(r.status, 401);
  });
});
