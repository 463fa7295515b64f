/**
 * Volumes without a VM: the service over a real SQLite store (create, names, delete refused while
 * a live sandbox mounts the volume, a create's mounts validated) and the gateway's route mapping
 * (which connection reaches which volume) with real bubblewrap + sftp-server on loopback.
 */
import assert from 'node:assert/strict';
import { mkdtemp, realpath, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { KilnError } from '../../core/errors.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { sandbox, template } from '../../store/store.contract.ts';
import { VolumeGateway } from './gateway.ts';
import { VolumeService, mountCommand } from './volume-service.ts';

const log = pino({ level: 'silent' });
const code = (c: string) => (e: unknown) => e instanceof KilnError && e.code === c;

let dir: string;
let store: SqliteStore;
let vols: VolumeService;

before(async () => {
  dir = await realpath(await mkdtemp(join(tmpdir(), 'kiln-volsvc-')));
  store = new SqliteStore(':memory:');
  store.putTemplate(template());
  vols = new VolumeService({ store, dataDir: dir, log });
});
after(async () => {
  store.close();
  await rm(dir, { recursive: true, force: true });
});

describe('VolumeService', () => {
  it('creates a volume (a directory of its owner), finds it by id or name, refuses a taken name', async () => {
    const v = await vols.create('data');
    assert.match(v.id, /^vol-/);
    assert.equal(v.token.length, 48);
    assert.equal((await stat(vols.dirOf(v.id))).uid, vols.owner.uid);
    assert.equal(vols.get('data').id, v.id);
    assert.equal(vols.get(v.id).name, 'data');
    await assert.rejects(vols.create('data'), code('already_exists'));
    await assert.rejects(vols.create('Bad/Name'), code('invalid_argument'));
    assert.throws(() => vols.byToken(v.id, 'wrong'), code('unauthenticated'));
    assert.throws(() => vols.byToken('vol-nope', v.token), code('unauthenticated'));
    assert.equal(vols.byToken(v.id, v.token).id, v.id);
  });

  it("validates a create's mounts: absolute distinct paths, existing volumes, at most 8", async () => {
    await vols.create('m');
    const plan = vols.planMounts('sbx-x', [
      { name: 'm', path: '/mnt/m/' },
      { name: 'data', path: '/data' },
    ]);
    assert.deepEqual(
      plan.map((m) => [m.path, m.index]),
      [
        ['/mnt/m', 0],
        ['/data', 1],
      ],
    );
    assert.throws(
      () => vols.planMounts('s', [{ name: 'm', path: 'rel' }]),
      /volumeMounts\[0\]\.path: must be an absolute path/,
    );
    assert.throws(() => vols.planMounts('s', [{ name: 'm', path: '/' }]), /cannot be a mount point/);
    assert.throws(() => vols.planMounts('s', [{ name: 'm', path: "/a'b" }]), /cannot be a mount point/);
    assert.throws(
      () =>
        vols.planMounts('s', [
          { name: 'm', path: '/a' },
          { name: 'data', path: '/a/' },
        ]),
      /"\/a" is given twice/,
    );
    assert.throws(() => vols.planMounts('s', [{ name: 'nope', path: '/a' }]), code('not_found'));
    const nine = Array.from({ length: 9 }, (_, i) => ({ name: 'm', path: `/m${i}` }));
    assert.throws(() => vols.planMounts('s', nine), /at most 8/);
    assert.match(mountCommand(plan), /sshfs -o directport=20491,reconnect,.* 192\.0\.2\.1:\/vol '\/data'/);
  });

  it('a mounted volume is deleted only once no live sandbox (running or paused) mounts it', async () => {
    const v = await vols.create('busy');
    store.insertSandbox(sandbox({ id: 'sbx-a', state: 'running' }));
    store.setMounts('sbx-a', vols.planMounts('sbx-a', [{ name: 'busy', path: '/v' }]));
    assert.deepEqual(vols.mountsOf('sbx-a'), [{ name: 'busy', path: '/v' }]);
    await assert.rejects(
      vols.delete('busy'),
      (e: unknown) => code('invalid_state')(e) && /mounted by sandbox sbx-a/.test(String(e)),
    );
    for (const state of ['pausing', 'paused'] as const) store.updateSandbox('sbx-a', { state });
    await assert.rejects(vols.delete('busy'), code('invalid_state'));
    for (const state of ['killing', 'dead'] as const) store.updateSandbox('sbx-a', { state });
    await vols.delete('busy');
    await assert.rejects(stat(vols.dirOf(v.id)), /ENOENT/);
    assert.deepEqual(store.listMounts('sbx-a'), [], "the dead sandbox's mount went with the volume");
  });

  it("a connection reaches the volume of its sandbox's mount index, only while it runs", async () => {
    const v = await vols.create('routed');
    store.insertSandbox(sandbox({ id: 'sbx-r', state: 'running' }));
    store.setMounts('sbx-r', vols.planMounts('sbx-r', [{ name: 'routed', path: '/v' }]));
    assert.equal(vols.connectionDir('sbx-r', 0), vols.dirOf(v.id));
    assert.equal(vols.connectionDir('sbx-r', 1), undefined, 'no mount at that index');
    assert.equal(vols.connectionDir('sbx-other', 0), undefined, 'another sandbox');
    for (const state of ['pausing', 'paused'] as const) store.updateSandbox('sbx-r', { state });
    assert.equal(vols.connectionDir('sbx-r', 0), undefined, 'a paused sandbox has no VM to serve');
  });
});

/** Sends SFTP INIT on a connection to `port`; resolves with how many bytes came back before close. */
function sftpInit(port: number): Promise<number> {
  return new Promise((res, rej) => {
    const s = connect(port, '127.0.0.1');
    let n = 0;
    s.on('connect', () => s.write(Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3])));
    s.on('data', (d) => {
      n += d.length;
      s.destroy();
    });
    s.on('close', () => {
      res(n);
    });
    s.on('error', rej);
  });
}

describe('VolumeGateway', () => {
  it('serves a confined sftp-server where resolve names a volume, closes everything else', async () => {
    const v = await vols.create('gw');
    const asked: [string, number][] = [];
    const gw = await VolumeGateway.start({
      count: 2,
      owner: vols.owner,
      etcDir: dir,
      log,
      host: '127.0.0.1',
      resolve: (addr, index) => {
        asked.push([addr, index]);
        return index === 0 ? vols.dirOf(v.id) : undefined;
      },
    });
    try {
      const [p0, p1] = gw.ports();
      assert.ok(p0 && p1);
      assert.ok((await sftpInit(p0)) > 0, 'index 0: an SFTP VERSION answer');
      assert.equal(await sftpInit(p1), 0, 'index 1: closed without a byte');
      assert.deepEqual(asked, [
        ['127.0.0.1', 0],
        ['127.0.0.1', 1],
      ]);
    } finally {
      await gw.close();
    }
  });
});
