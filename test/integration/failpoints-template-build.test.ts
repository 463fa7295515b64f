/**
 * kill -9 of kilnd (failpoints) in the middle of a template build (`kiln template build -f`), a
 * journalled operation of its own (kind `build`): just after its builder sandbox is recorded
 * (`build:builder`); while a step's layer is being snapshotted, once before its point of no
 * return (`snapshot:source paused`: the layer is unwound) and once after it (`snapshot:disk
 * frozen`: the layer is finished as cache). After a restart without the failpoint: the build is
 * failed ("interrupted by a daemon restart"), its builder sandbox killed (no QEMU), no operation
 * open, a snapshot directory per record and nothing else, no template snapshot made; a new build
 * of the same Dockerfile then succeeds. Killed just after the template is published
 * (`build:published`), the build is ready, the template usable, and the builder gone.
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { CrashDaemon } from '../helpers/crash-daemon.ts';
import { CLI } from '../helpers/kilnd.ts';

describe('kill -9 in a template build (failpoints, real guests)', { timeout: 1_500_000 }, () => {
  let main: CrashDaemon;
  let ctx = '';
  /** `kiln template build -f` of the context; rejects unless it exits 0. */
  const build = (name: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const p = spawn(
        process.execPath,
        [CLI, 'template', 'build', '-f', join(ctx, 'Dockerfile'), '--name', name, ctx],
        {
          env: {
            ...process.env,
            KILN_STATE_DIR: main.state,
            KILN_E2B_API_PORT: '0',
            KILN_E2B_SANDBOX_PORT: '0',
          },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let err = '';
      p.stderr.on('data', (b: Buffer) => (err += b.toString()));
      p.on('close', (code) => {
        if (code === 0) resolve();
        else reject(new Error(`template build exited ${code}: ${err}`));
      });
    });

  /** The open operations, for a failure's message. */
  const openOps = (): string =>
    JSON.stringify(main.rows(`SELECT kind, subject, steps FROM operations WHERE state = 'running'`));

  before(async () => {
    main = new CrashDaemon(await mkdtemp('/tmp/kiln-fptpl-'));
    ctx = join(main.state, 'ctx');
    mkdirSync(ctx);
    main.start();
    await main.c.buildTemplate({ name: 'base' });
    main.stop();
  });
  after(async () => {
    await main.cleanUp();
    await rm(main.state, { recursive: true, force: true });
  });

  afterEach(() => {
    // A failed test's kilnd must not serve the next one's armed start (none may run: fine).
    try {
      main.stop();
    } catch {
      // no kilnd was running
    }
  });

  for (const step of ['build:builder', 'snapshot:source paused', 'snapshot:disk frozen'])
    it(`kill -9 at "${step}": the build is failed, its builder killed, nothing half made`, async () => {
      const name = `fp-${step.replace(/[: ]/g, '-')}`;
      // Steps of this test's own (no layer cached by another test): the first snapshot of the
      // build is its first RUN's layer.
      writeFileSync(
        join(ctx, 'Dockerfile'),
        `FROM base\nRUN echo ${name} > /tmp/one\nRUN echo two > /tmp/two\n`,
      );
      const tplSnapshots = (): number =>
        main.rows(`SELECT id FROM snapshots WHERE name LIKE 'kiln-tpl-%' AND deleted_at IS NULL`).length;
      const before = tplSnapshots();
      // Start-up kills the builder after refilling the network pool: its slot is freed below.
      await main.dieAt(step, () => build(name), { poolSlots: 'any' });
      const rows = main.rows<{
        status: string;
        reason: string;
        builder_id: string | null;
        snapshot_id: string | null;
      }>('SELECT status, reason, builder_id, snapshot_id FROM template_builds WHERE template_name = ?', name);
      assert.equal(rows.length, 1);
      const [r] = rows;
      assert.ok(r);
      assert.equal(r.status, 'error');
      assert.match(r.reason, /interrupted by a daemon restart/);
      assert.equal(r.builder_id, null);
      assert.equal(r.snapshot_id, null, 'no template snapshot');
      assert.deepEqual(main.qemus(), [], 'the builder sandbox is killed');
      assert.equal(main.openOps(), 0, `no operation left open: ${openOps()}`);
      assert.deepEqual(main.snapshotDirs(), main.snapshotIds(), 'a directory per snapshot record');
      assert.equal(tplSnapshots(), before, 'no running-state snapshot was made');
      // Nothing left in the way: the same build now succeeds.
      await build(name);
      const t = main.rows<{ snapshot_id: string | null }>(
        'SELECT snapshot_id FROM templates WHERE name = ?',
        name,
      );
      assert.equal(t.length, 1);
      assert.ok(t[0]?.snapshot_id, 'the template has its snapshot');
    });

  it('kill -9 at "build:published": the build is ready, its template serves sandboxes, the builder is gone', async () => {
    const name = 'fp-published';
    writeFileSync(join(ctx, 'Dockerfile'), `FROM base\nRUN echo ${name} > /tmp/one\n`);
    await main.dieAt('build:published', () => build(name), { poolSlots: 'any' });
    const rows = main.rows<{ status: string; builder_id: string | null; snapshot_id: string | null }>(
      'SELECT status, builder_id, snapshot_id FROM template_builds WHERE template_name = ?',
      name,
    );
    assert.equal(rows.length, 1);
    const [r] = rows;
    assert.ok(r);
    assert.equal(r.status, 'ready');
    assert.ok(r.snapshot_id, 'the build names its snapshot');
    const t = main.rows<{ snapshot_id: string | null }>(
      'SELECT snapshot_id FROM templates WHERE name = ?',
      name,
    );
    assert.equal(t[0]?.snapshot_id, r.snapshot_id, 'the template points at it');
    assert.deepEqual(main.qemus(), [], 'the builder sandbox is killed');
    assert.equal(main.openOps(), 0, `no operation left open: ${openOps()}`);
    assert.deepEqual(main.snapshotDirs(), main.snapshotIds(), 'a directory per snapshot record');
    // The template works (kilnd runs again, unarmed): a sandbox of it sees what its step wrote.
    const sbx = (await main.c.createSandbox({ template: name })).sandboxId;
    assert.equal(await main.sh(sbx, 'cat /tmp/one'), `${name}\n`);
    await main.c.killSandbox(sbx);
  });
});
