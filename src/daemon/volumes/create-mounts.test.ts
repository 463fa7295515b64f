/**
 * A create with volume mounts on the fake driver: the mounts are recorded and the guest runs the
 * sshfs command; a mount that fails in the guest unwinds the create and detaches the mounts (the
 * volume can be deleted); a sandbox restored from a snapshot of a mounting sandbox inherits its
 * mounts without mounting again (its guest memory holds them).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { KilnError } from '../../core/errors.ts';
import { FakeGuests, ServiceFixture } from '../testing/fixtures.ts';
import type { VolumeService } from './volume-service.ts';

describe('create with volumeMounts (fake driver)', () => {
  let fx: ServiceFixture;
  let vols: VolumeService;
  const cmds: string[] = [];
  beforeEach(async () => {
    cmds.length = 0;
    const guests = new FakeGuests();
    fx = await ServiceFixture.start({
      base: true,
      deps: {
        guest: () => {
          const c = guests.client();
          return {
            ...c,
            exec: (cmd, o) => {
              cmds.push(`${o?.user ?? '?'}: ${cmd}`);
              return c.exec(cmd, o);
            },
          };
        },
      },
    });
    const v = fx.svc.volumes;
    assert.ok(v);
    vols = v;
    await vols.create('data');
  });
  afterEach(() => fx.close());

  it('records the mounts and mounts them in the guest as root', async () => {
    const s = await fx.svc.create({ template: 'base', volumeMounts: [{ name: 'data', path: '/mnt/data' }] });
    assert.equal(s.state, 'running');
    assert.deepEqual(vols.mountsOf(s.id), [{ name: 'data', path: '/mnt/data' }]);
    assert.equal(cmds.length, 1);
    assert.match(cmds[0] ?? '', /^root: set -e\n/);
    assert.match(
      cmds[0] ?? '',
      /sshfs -o directport=20490,reconnect,allow_other,dir_cache=no 192\.0\.2\.1:\/vol '\/mnt\/data'/,
    );
    assert.deepEqual(vols.users(vols.get('data').id), [s.id]);
  });

  it('a mount that fails in the guest fails the create: dead, no VM, mounts detached, volume deletable', async () => {
    await assert.rejects(
      fx.svc.create({ template: 'base', volumeMounts: [{ name: 'data', path: '/mnt/fail' }] }),
      (e: unknown) =>
        e instanceof KilnError &&
        e.code === 'guest_agent_error' &&
        /mounting the sandbox's volumes failed/.test(e.message),
    );
    const dead = fx.svc.list().items.at(0);
    assert.equal(dead?.state, 'dead');
    assert.deepEqual(await fx.driver.list(), []);
    assert.deepEqual(fx.store.listMounts(dead.id), []);
    await vols.delete('data');
  });

  it('a sandbox restored from a snapshot of a mounting sandbox inherits its mounts and reconnects them, without mounting again', async () => {
    const s = await fx.svc.create({ template: 'base', volumeMounts: [{ name: 'data', path: '/v' }] });
    await fx.svc.snapshot(s.id, { name: 'with-vol' });
    const clone = await fx.svc.create({ template: 'with-vol' });
    assert.deepEqual(vols.mountsOf(clone.id), [{ name: 'data', path: '/v' }]);
    assert.equal(cmds.length, 2);
    assert.doesNotMatch(cmds[1] ?? '', /sshfs/, 'the clone did not mount again');
    assert.match(
      cmds[1] ?? '',
      /^root: n=0; until timeout 10 stat -f -- '\/v'/,
      'it made its sshfs reconnect',
    );
    await fx.svc.kill(s.id);
    await assert.rejects(vols.delete('data'), /is mounted by sandbox/);
  });
});
