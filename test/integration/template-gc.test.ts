/**
 * Template garbage collection against a real kilnd with real QEMU guests (its own state dir):
 * a Dockerfile with two RUN steps is built, one step changed and rebuilt; `kiln template gc
 * --grace 0` removes the first build's layer and keeps the current chain; after `kiln template
 * rm`, a sandbox made from the template before keeps running on its layers, which stay (files
 * and records) until it is killed; then no layer directory is left under the state dir. And kill
 * -9 of kilnd at each journalled step of a removal (`collect:records removed`, `collect:files
 * moved`): after a restart the layer is gone whole (no record, no directory, nothing moved aside).
 * Run under the VM lock: `flock /work/.vm.lock scripts/node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { TemplateGcView } from '../../src/core/api-types.ts';
import { COLLECT_STEPS } from '../../src/daemon/sandbox/collect.ts';
import { CrashDaemon } from '../helpers/crash-daemon.ts';
import { CLI } from '../helpers/kilnd.ts';

describe('template garbage collection (real guests)', { timeout: 1_800_000 }, () => {
  let main: CrashDaemon;
  let ctx = '';
  const env = (): NodeJS.ProcessEnv => ({
    ...process.env,
    KILN_STATE_DIR: main.state,
    KILN_E2B_API_PORT: '0',
    KILN_E2B_SANDBOX_PORT: '0',
  });
  /** `kiln ARGS...`; resolves with its stdout, rejects unless it exits `want` (0). */
  const kiln = (args: string[], want = 0): Promise<string> =>
    new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [CLI, ...args], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
      let [out, err] = ['', ''];
      p.stdout.on('data', (b: Buffer) => (out += b.toString()));
      p.stderr.on('data', (b: Buffer) => (err += b.toString()));
      p.on('close', (code) => {
        if (code === want) resolve(out);
        else reject(new Error(`kiln ${args.join(' ')} exited ${String(code)}: ${err}`));
      });
    });
  const build = (name: string, dockerfile: string, want = 0): Promise<string> => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return kiln(['template', 'build', '-f', join(ctx, 'Dockerfile'), '--name', name, ctx], want);
  };
  const gc = async (...more: string[]): Promise<TemplateGcView> =>
    JSON.parse(await kiln(['template', 'gc', '--grace', '0', '--json', ...more])) as TemplateGcView;
  const liveLayers = (): string[] =>
    main
      .rows<{ id: string }>(
        `SELECT id FROM snapshots WHERE name LIKE 'kiln-layer-%' AND deleted_at IS NULL ORDER BY created_at`,
      )
      .map((r) => r.id);
  const dir = (id: string): string => join(main.state, 'data', 'snapshots', id);
  const layersOf = (name: string): string[] =>
    main
      .rows<{ layers: string }>(
        `SELECT layers FROM template_builds WHERE template_name = ? AND status = 'ready' ORDER BY created_at`,
        name,
      )
      .map((r) => JSON.parse(r.layers) as string[])
      .at(-1) ?? [];

  before(async () => {
    main = new CrashDaemon(await mkdtemp('/tmp/kiln-tplgc-'));
    ctx = join(main.state, 'ctx');
    mkdirSync(ctx);
    main.start();
    await main.c.buildTemplate({ name: 'base' });
  });
  after(async () => {
    await main.cleanUp();
    await rm(main.state, { recursive: true, force: true });
  });
  /** Stops kilnd if it runs (a crash test starts its own, armed). */
  const stopped = (): void => {
    try {
      main.stop();
    } catch {
      // none was running
    }
  };

  it('rebuild, gc, rm: old layers go; a running sandbox keeps its chain until it is killed', async () => {
    await build('app', 'FROM base\nRUN echo one > /tmp/one\nRUN echo two > /tmp/two\n');
    const first = layersOf('app');
    await build('app', 'FROM base\nRUN echo one > /tmp/one\nRUN echo TWO > /tmp/two\n');
    const second = layersOf('app');
    assert.equal(first.length, 2);
    assert.equal(second[0], first[0], 'the first step came from the cache');
    const [, old] = first;
    assert.ok(old && second[1] && old !== second[1]);
    assert.deepEqual(liveLayers().sort(), [...new Set([...first, ...second])].sort());

    const dry = await gc('--dry-run');
    assert.deepEqual(
      dry.removed.map((x) => x.snapshotId),
      [old],
    );
    assert.ok(existsSync(dir(old)), 'the dry run removed nothing');
    const r = await gc();
    assert.deepEqual(
      r.removed.map((x) => x.snapshotId),
      [old],
    );
    assert.equal(existsSync(dir(old)), false);
    assert.deepEqual(liveLayers().sort(), [...second].sort(), 'the current chain stays');
    assert.equal(main.journalled('collect').length, COLLECT_STEPS.length);

    const sbx = await main.c.createSandbox({ template: 'app' });
    const tplSnap = main.rows<{ snapshot_id: string }>(
      `SELECT snapshot_id FROM templates WHERE name = 'app'`,
    )[0]?.snapshot_id;
    assert.ok(tplSnap);
    assert.equal(await main.sh(sbx.sandboxId, 'cat /tmp/one /tmp/two'), 'one\nTWO\n');

    await kiln(['template', 'rm', 'app']);
    await gc();
    assert.equal(await main.sh(sbx.sandboxId, 'cat /tmp/two'), 'TWO\n', 'the sandbox keeps running');
    for (const id of [tplSnap, ...second]) {
      assert.ok(existsSync(dir(id)), `${id}, which the sandbox stands on, keeps its files`);
      assert.equal(main.rows('SELECT id FROM snapshots WHERE id = ?', id).length, 1, `and its record`);
    }

    await main.c.killSandbox(sbx.sandboxId);
    await gc();
    for (const id of [tplSnap, ...second, old]) {
      assert.equal(existsSync(dir(id)), false, `${id}'s directory is gone`);
      assert.deepEqual(main.rows('SELECT id FROM snapshots WHERE id = ?', id), [], `and its record`);
    }
    assert.deepEqual(
      main.snapshotDirs(),
      main.snapshotIds(),
      'a directory per snapshot record, nothing else',
    );
    assert.deepEqual(main.qemus(), [], 'no VM left');
  });

  for (const step of COLLECT_STEPS)
    it(`kill -9 at "collect:${step}": after a restart the layer is gone whole`, async () => {
      // A failed build leaves its first step's layer as cache, which nothing else uses.
      const tag = step.replace(/ /g, '-');
      await build(`bad-${tag}`, `FROM base\nRUN echo ${tag} > /tmp/x\nRUN exit 3\n`, 1);
      const [layer, ...more] = liveLayers();
      assert.ok(layer && existsSync(dir(layer)));
      assert.deepEqual(more, [], 'the only layer nothing uses');
      stopped();
      await main.dieAt(`collect:${step}`, () => main.c.collectTemplates({ graceS: 0 }));
      assert.deepEqual(main.rows('SELECT id FROM snapshots WHERE id = ?', layer), []);
      assert.equal(existsSync(dir(layer)), false);
      assert.deepEqual(main.snapshotDirs(), main.snapshotIds(), 'nothing moved aside is left');
      assert.equal(main.openOps(), 0, 'the removal was finished');
    });
});
