/**
 * kill -9 of kilnd in the middle of mounting a volume (failpoints `create:volume mounts`: the
 * mounts recorded, no VM yet; `create:guest mounts`: the guest has mounted it over a live
 * confined sftp-server), then a restart: the create is undone (the sandbox dead, its VM killed),
 * nothing stays attached to the dead VM (no mounts recorded for it, so the volume can be
 * deleted), and no bwrap or sftp-server of the dead kilnd is left. Through the unmodified e2b SDK.
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Sandbox, Volume } from 'e2b';
import { CrashDaemon } from '../helpers/crash-daemon.ts';
import { kilnSync } from '../helpers/kilnd.ts';

/** Volume servers of any kilnd (only volume mounts start them): their pids. */
function volumeServers(state: string): string[] {
  const ps = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return ps
    .split('\n')
    .filter((l) => l.includes('sftp-server -d /vol') || (l.includes('bwrap') && l.includes(state)))
    .map((l) => l.trim().split(' ')[0] ?? '');
}

describe('kill -9 while mounting a volume (failpoints, real guests)', { timeout: 1_200_000 }, () => {
  let main: CrashDaemon;
  /** The E2B API of the running kilnd (its port changes with each start). */
  const api = (): { apiUrl: string; apiKey: string } => {
    const env = {
      ...process.env,
      KILN_STATE_DIR: main.state,
      KILN_E2B_API_PORT: '0',
      KILN_E2B_SANDBOX_PORT: '0',
    };
    const m = /E2B_API_URL='([^']+)'.*E2B_API_KEY='([^']+)'/.exec(kilnSync(env, 'e2b', 'env').stdout);
    assert.ok(m?.[1] && m[2]);
    return { apiUrl: m[1], apiKey: m[2] };
  };

  before(async () => {
    main = new CrashDaemon(await mkdtemp('/tmp/kiln-fpvol-'));
    main.start();
    await main.c.buildTemplate({ name: 'base' });
    main.stop();
  });
  after(async () => {
    await main.cleanUp();
    await rm(main.state, { recursive: true, force: true });
  });

  for (const step of ['create:volume mounts', 'create:guest mounts'])
    it(`kill -9 at "${step}": the create is undone, the volume is free, no volume server is left`, async () => {
      main.start();
      const vol = await Volume.create(`v-${step.split(':')[1]?.replace(/ /g, '-') ?? ''}`, api());
      main.stop();
      const known = main.rows<{ id: string }>('SELECT id FROM sandboxes').map((r) => r.id);
      await main.dieAt(step, async () =>
        Sandbox.create('base', { ...api(), volumeMounts: { '/mnt/v': vol.name } }),
      );
      const rows = main
        .rows<{ id: string; state: string }>('SELECT id, state FROM sandboxes')
        .filter((r) => !known.includes(r.id));
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.state, 'dead', 'the create was undone');
      assert.deepEqual(main.qemus(), [], 'no QEMU');
      assert.equal(main.rows('SELECT * FROM volume_mounts').length, 0, 'nothing attached to the dead VM');
      assert.equal(main.openOps(), 0);
      assert.deepEqual(volumeServers(main.state), [], 'no bwrap or sftp-server left');
      assert.equal(await Volume.destroy(vol.volumeId, api()), true);
      main.stop();
    });
});
