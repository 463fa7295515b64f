/**
 * The warm pool with real guests (issue 15), through a real kilnd and the unmodified e2b SDK:
 * KILN_WARM_POOL fills `base`; a create takes a member and only runs /init (a working sandbox,
 * a fresh token that is the only one its agent takes, its own entropy) and the pool refills;
 * members are in no list (native, CLI, E2B); they survive a restart of kilnd as members; a
 * create that admission refuses for memory (a small KILN_OVERCOMMIT_RATIO) kills a member
 * first; deleting a template drains its pool; kill -9 of kilnd in the middle of a fill
 * (failpoint `pool-fill:guest ready`) leaves no QEMU, overlay or open operation behind and the
 * pool refills after the restart; 20 concurrent SDK creates all succeed (p50/p99 reported).
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import { CrashDaemon } from '../helpers/crash-daemon.ts';
import { kilnSync } from '../helpers/kilnd.ts';

const MEMORY_MIB = 512;
const READ = 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"';

describe('warm pool (real guests, e2b SDK)', { timeout: 1_800_000 }, () => {
  let d: CrashDaemon;
  const env = (): NodeJS.ProcessEnv => ({
    ...process.env,
    KILN_STATE_DIR: d.state,
    KILN_E2B_API_PORT: '0',
    KILN_E2B_SANDBOX_PORT: '0',
  });
  /** The E2B API and envd proxy of the running kilnd (ports change with each start). */
  const api = (): { apiUrl: string; apiKey: string; sandboxUrl: string } => {
    const out = kilnSync(env(), 'e2b', 'env').stdout;
    const m = /E2B_API_URL='([^']+)' E2B_SANDBOX_URL='([^']+)' E2B_API_KEY='([^']+)'/.exec(out);
    assert.ok(m?.[1] && m[2] && m[3], out);
    return { apiUrl: m[1], sandboxUrl: m[2], apiKey: m[3] };
  };
  const members = (template = 'base'): string[] =>
    d
      .rows<{ id: string }>(
        'SELECT p.id FROM pool_vms p JOIN templates t ON t.id = p.template_id WHERE t.name = ? ORDER BY p.id',
        template,
      )
      .map((r) => r.id);
  /** Waits until `template`'s pool holds exactly `n` ready members and none starting. */
  const waitPool = async (n: number, template = 'base'): Promise<void> => {
    let last = '';
    for (let i = 0; i < 900; i++) {
      const p = await d.c.warmPool(template);
      last = JSON.stringify(p);
      if (p.ready === n && p.starting === 0) return;
      await sleep(200);
    }
    assert.fail(`the warm pool of ${template} did not reach ${n} ready: ${last}`);
  };
  /** Runs `cmd` in an SDK sandbox; its stdout. */
  const run = async (s: Sandbox, cmd: string): Promise<string> => {
    const r = await s.commands.run(cmd);
    assert.equal(r.exitCode, 0, r.stderr);
    return r.stdout;
  };

  before(async () => {
    d = new CrashDaemon(await mkdtemp('/tmp/kiln-pool-'));
    d.start();
    await d.c.buildTemplate({ name: 'base' });
    d.stop();
  });
  after(async () => {
    delete process.env['KILN_WARM_POOL'];
    delete process.env['KILN_OVERCOMMIT_RATIO'];
    await d.cleanUp();
    await rm(d.state, { recursive: true, force: true });
  });

  it('KILN_WARM_POOL=2: creates take members (fresh tokens, own entropy), the pool refills, no list shows it', async (t) => {
    process.env['KILN_WARM_POOL'] = '2';
    d.start();
    await waitPool(2);
    const pool = members();
    assert.equal(d.qemus().length, 2, 'a QEMU per member');
    // Invisible: native list, CLI, E2B list.
    assert.deepEqual((await d.c.listSandboxes()).items, []);
    const cli = kilnSync(env(), 'sandbox', 'list', '--all', '--json');
    assert.equal(cli.status, 0, cli.stderr);
    assert.deepEqual(JSON.parse(cli.stdout), []);
    const e = api();
    assert.deepEqual(await Sandbox.list({ ...e }).nextItems(), []);

    const t0 = performance.now();
    const [a, b] = await Promise.all([Sandbox.create('base', e), Sandbox.create('base', e)]);
    const createMs = Math.round((performance.now() - t0) / 2);
    assert.deepEqual([a.sandboxId, b.sandboxId].sort(), pool, 'both creates took a member');
    assert.equal((await run(a, 'echo hi')).trim(), 'hi');
    const [ra, rb] = await Promise.all([run(a, READ), run(b, READ)]);
    assert.match(ra, /^[0-9a-f]{64}$/);
    assert.notEqual(ra, rb, 'two pooled sandboxes read different /dev/urandom bytes');
    // Only its own fresh token reaches a sandbox: not the other's, not the snapshot's bootstrap token.
    const detail = async (id: string): Promise<string> => {
      const r = await fetch(`${e.apiUrl}/sandboxes/${id}`, { headers: { 'x-api-key': e.apiKey } });
      return ((await r.json()) as { envdAccessToken: string }).envdAccessToken;
    };
    const [ta, tb] = [await detail(a.sandboxId), await detail(b.sandboxId)];
    const boot = d.rows<{ guest_token: string }>(
      `SELECT s.guest_token FROM snapshots s JOIN templates t ON t.snapshot_id = s.id WHERE t.name = 'base'`,
    )[0]?.guest_token;
    assert.ok(boot);
    const list = (id: string, token: string): Promise<number> =>
      fetch(`${e.sandboxUrl}/process.Process/List`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'e2b-sandbox-id': id, 'x-access-token': token },
        body: '{}',
      }).then((r) => r.status);
    assert.equal(await list(a.sandboxId, ta), 200);
    assert.equal(await list(a.sandboxId, tb), 401, "b's token at a");
    assert.equal(await list(a.sandboxId, boot), 401, 'the bootstrap token no longer works');
    // Refilled behind the takes; lists show the two sandboxes only.
    await waitPool(2);
    assert.equal(members().filter((id) => pool.includes(id)).length, 0);
    assert.deepEqual(
      (await d.c.listSandboxes()).items.map((s) => s.sandboxId).sort(),
      [a.sandboxId, b.sandboxId].sort(),
    );
    assert.equal((await Sandbox.list({ ...e }).nextItems()).length, 2);
    assert.equal(d.qemus().length, 4);
    const events = d.rows<{ data: string }>(
      `SELECT data FROM events WHERE sandbox_id = ? AND message = 'sandbox created'`,
      a.sandboxId,
    );
    assert.equal((JSON.parse(events[0]?.data ?? '{}') as { warmPool?: boolean }).warmPool, true);
    t.diagnostic(`pooled create (e2b SDK, 2 at once): ${createMs} ms each`);
    await Promise.all([a.kill(), b.kill()]);
  });

  it('a restart keeps the members; a create admission refuses for memory kills one first', async () => {
    const pool = members();
    d.stop();
    assert.equal(d.qemus().length, 2, 'members outlive kilnd');
    // Room for 3 guests of 512 MiB.
    const host = Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]) / 1024;
    process.env['KILN_OVERCOMMIT_RATIO'] = String((3 * MEMORY_MIB + 256) / Math.floor(host));
    d.start();
    await waitPool(2);
    assert.deepEqual(members(), pool, 're-adopted as members, not replaced');
    const e = api();
    const a = await Sandbox.create('base', e);
    assert.ok(pool.includes(a.sandboxId));
    await waitPool(2);
    assert.equal(d.qemus().length, 3, 'the limit: one sandbox, two members');
    // A restore of a snapshot never takes a member: admission refuses it, a member makes room.
    const snap = await a.createSnapshot();
    const r = await Sandbox.create(snap.snapshotId, e);
    assert.equal((await run(r, 'echo restored')).trim(), 'restored');
    assert.equal(members().length, 1, 'one member killed for it');
    await sleep(6000); // two refill passes: still no room for another member
    assert.equal(members().length, 1);
    assert.equal(d.qemus().length, 3);
    await Promise.all([a.kill(), r.kill()]);
    await waitPool(2);
    d.stop();
    delete process.env['KILN_OVERCOMMIT_RATIO'];
  });

  it('a template of its own gets a pool through the API; deleting the template drains it', async () => {
    d.start();
    const b = await d.c.startTemplateBuild({
      name: 'pooled',
      fromTemplate: 'base',
      steps: [{ type: 'RUN', args: ['echo pooled > /home/user/marker'] }],
    });
    for (let i = 0; (await d.c.templateBuild(b.id)).status === 'building'; i++) {
      assert.ok(i < 600, 'the template build ended within 2 minutes');
      await sleep(200);
    }
    assert.equal((await d.c.templateBuild(b.id)).status, 'ready');
    const set = kilnSync(env(), 'template', 'pool', 'pooled', '1', '--json');
    assert.equal(set.status, 0, set.stderr);
    assert.equal((JSON.parse(set.stdout) as { size: number }).size, 1);
    await waitPool(1, 'pooled');
    const [m] = members('pooled');
    const s = await Sandbox.create('pooled', api());
    assert.equal(s.sandboxId, m);
    assert.equal((await run(s, 'cat /home/user/marker')).trim(), 'pooled');
    await waitPool(1, 'pooled');
    const [next] = members('pooled');
    assert.ok(next);
    await d.c.deleteTemplate('pooled');
    assert.deepEqual(
      d.rows('SELECT id FROM pool_vms WHERE id = ?', next),
      [],
      'the deleted template has no member',
    );
    assert.ok(!d.vmDirs().includes(next), 'its VM directory (overlay) is gone');
    await sleep(6000);
    assert.deepEqual(d.vmDirs(), [...members(), s.sandboxId].sort(), 'VMs: the base pool and the sandbox');
    assert.equal(d.qemus().length, members().length + 1);
    await s.kill();
  });

  it('kill -9 of kilnd in the middle of a fill: nothing leaked, the pool refills after the restart', async () => {
    await d.c.setWarmPool('base', 0);
    await waitPool(0);
    assert.deepEqual(d.qemus(), []);
    d.stop();
    const fp = 'pool-fill:guest ready';
    d.start(fp);
    const pid = Number(readFileSync(`${d.state}/kilnd.pid`, 'utf8'));
    await d.c.setWarmPool('base', 1);
    for (let i = 0; pidAlive(pid); i++) {
      assert.ok(i < 600, `kilnd still alive 60 s after arming ${fp}`);
      await sleep(100);
    }
    assert.ok(readFileSync(`${d.state}/kilnd.log`, 'utf8').includes(`failpoint ${fp} hit`));
    const [half] = members();
    assert.ok(half, 'the interrupted fill left its record');
    assert.equal(d.qemus().length, 1, "the fill's QEMU outlived kilnd");
    d.start();
    await waitPool(1);
    const [now] = members();
    assert.ok(now && now !== half, 'the interrupted member was removed and a new one made');
    assert.deepEqual(d.vmDirs(), [now], 'no VM directory (overlay) of the interrupted fill');
    assert.equal(d.qemus().length, 1, 'one QEMU: the new member');
    assert.equal(d.openOps(), 0);
    assert.deepEqual(d.rows('SELECT state FROM operations WHERE subject = ?', half), [{ state: 'undone' }]);
    await d.assertNetworks('after the restart and the refill');
    assert.deepEqual(d.journalled('pool-fill'), [
      'pool-fill:pool record',
      'pool-fill:vm',
      'pool-fill:network',
      'pool-fill:guest ready',
    ]);
  });

  it('20 concurrent creates through the e2b SDK all succeed (p50/p99 reported)', async (t) => {
    await d.c.setWarmPool('base', 2);
    await waitPool(2);
    const e = api();
    const times: number[] = [];
    const t0 = performance.now();
    const made = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const t = performance.now();
        const s = await Sandbox.create('base', { ...e, timeoutMs: 600_000 });
        times.push(performance.now() - t);
        return s;
      }),
    );
    const wall = performance.now() - t0;
    assert.equal(new Set(made.map((s) => s.sandboxId)).size, 20);
    const outs = await Promise.all(made.map((s) => run(s, 'echo ok')));
    assert.deepEqual(
      outs.map((o) => o.trim()),
      Array(20).fill('ok'),
    );
    times.sort((x, y) => x - y);
    const q = (p: number): number => Math.round(times[Math.min(19, Math.ceil((p / 100) * 20) - 1)] ?? 0);
    t.diagnostic(
      `20 concurrent e2b creates: p50 ${q(50)} ms, p99 ${q(99)} ms, all in ${Math.round(wall)} ms`,
    );
    await Promise.all(made.map((s) => s.kill()));
  });
});
