/**
 * Snapshots of running sandboxes on real QEMU guests: snapshot + two restores that see the
 * file and the background process of the source and are isolated from it and from each other;
 * pause/resume five times with a change between each; fork into 4; deletion refused while
 * clones depend on a snapshot; disk chains flattened; bad input refused with nothing changed.
 */
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { open, readFile, readdir, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../../src/core/errors.ts';
import { MAX_DISK_CHAIN, type SandboxService } from '../../src/daemon/sandbox-service.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { realHost, wireService, type RealHost } from '../helpers/service.ts';

const rejectsCode = (p: Promise<unknown>, code: string, re?: RegExp): Promise<void> =>
  assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof KilnError, String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });

describe('snapshots, pause/resume and fork of running sandboxes', { timeout: 900_000 }, () => {
  let host: RealHost;
  let root: string;
  let svc: SandboxService;

  before(async () => {
    host = await realHost({ prefix: 'kiln-snap-' });
    root = host.root;
    svc = host.service();
    await svc.buildTemplate('base', host.image, { memoryMiB: 512, vcpus: 1 });
  });
  after(() => host.close());

  const out = async (id: string, cmd: string): Promise<string> => {
    const r = await svc.exec(id, cmd);
    assert.equal(r.exitCode, 0, `${cmd}: ${r.stderr}`);
    return r.stdout.trim();
  };
  /**
   * The counter the background process bumps (every 0.1 s) must move: one command in the guest
   * watches it and answers at its first change (or fails after 10 s of standing still).
   */
  const counterMoves = async (id: string): Promise<void> => {
    const r = await svc.exec(
      id,
      'a=$(cat /tmp/counter); b=$a; i=0; while [ $i -lt 200 ]; do b=$(cat /tmp/counter); [ "$b" -gt "$a" ] && exit 0; i=$((i+1)); sleep 0.05; done; echo "$a -> $b"; exit 1',
    );
    assert.equal(r.exitCode, 0, `background counter in ${id} stalled: ${r.stdout}${r.stderr}`);
  };

  let src = '';
  let snapId = '';
  it('snapshots a running sandbox; the source keeps running and reports its pause', async () => {
    src = (await svc.create({ template: 'base', envVars: { WHO: 'src' } })).id;
    await out(src, 'echo v1 > /home/user/f');
    await out(
      src,
      "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 < /dev/null & echo $! > /tmp/counter.pid",
    );
    await counterMoves(src);
    const snap = await svc.snapshot(src, { name: 'first' });
    snapId = snap.id;
    assert.equal(snap.kind, 'snapshot');
    assert.equal(snap.sandboxId, src);
    assert.ok(snap.pauseMs !== null && snap.pauseMs > 0 && snap.pauseMs < 10_000, String(snap.pauseMs));
    assert.deepEqual(snap.artifacts.map((a) => a.kind).sort(), ['disk', 'memory', 'state']);
    for (const a of snap.artifacts) assert.match(a.sha256, /^[0-9a-f]{64}$/);
    assert.equal(svc.get(src).state, 'running');
    assert.equal(svc.get(src).sourceSnapshotId, snap.id, 'the source now sits on the frozen layer');
    assert.equal(await out(src, 'cat /home/user/f'), 'v1');
    await counterMoves(src);
    assert.deepEqual(svc.getSnapshot('first'), snap);
  });

  let c1 = '';
  let c2 = '';
  it('restores it twice at once: both see the file and the process; writes stay apart', async () => {
    const tRestore = Date.now() / 1000;
    const [a, b] = await Promise.all([svc.restore(snapId), svc.restore('first')]);
    c1 = a.id;
    c2 = b.id;
    assert.notEqual(a.accessToken, b.accessToken);
    // The clock was re-synced on restore: /init carries the host's time, taken after the
    // restore began, so the guest reads no earlier than that (a snapshot's own clock would be
    // older) and no later than now. On a loaded host /init takes seconds to arrive, and the guest
    // sets the time it carries: the lower bound is the restore's start, not this exec's.
    for (const c of [c1, c2]) {
      const guestNow = Number(await out(c, 'date +%s'));
      const t1 = Date.now() / 1000;
      assert.ok(
        guestNow >= Math.floor(tRestore) - 1 && guestNow <= t1 + 2,
        `guest clock ${guestNow} outside host [${tRestore}, ${t1}]`,
      );
    }
    for (const c of [c1, c2]) {
      assert.equal(await out(c, 'cat /home/user/f'), 'v1');
      assert.equal(await out(c, 'echo $WHO; whoami'), 'src\nuser', 'env of the source, default user');
      await counterMoves(c);
      // By the agent's clock helper (already running in the snapshot), not a spawned `date`.
      assert.match(
        await readFile((await host.driver.status(c)).serialLog, 'utf8'),
        /clock set from \/init by helper/,
      );
    }
    await out(c1, 'echo c1 > /home/user/f; sync');
    await out(src, 'echo src2 > /home/user/f; sync');
    assert.equal(await out(c1, 'cat /home/user/f'), 'c1');
    assert.equal(await out(c2, 'cat /home/user/f'), 'v1');
    assert.equal(await out(src, 'cat /home/user/f'), 'src2');
  });

  it('refuses bad input and changes nothing', async () => {
    const before = { snaps: svc.listSnapshots().length, vms: (await host.driver.list()).length };
    await rejectsCode(svc.restore('snap-nope'), 'not_found', /snap-nope/);
    await rejectsCode(svc.snapshot(src, { name: 'first' }), 'already_exists', /first/);
    await rejectsCode(svc.snapshot(src, { name: '../x' }), 'invalid_argument', /name/);
    await rejectsCode(svc.snapshot('sbx-nope'), 'not_found');
    await rejectsCode(svc.fork(src, { count: 0 }), 'invalid_argument', /count/);
    const tplSnap = svc.listSnapshots({ kind: 'template' })[0]?.id ?? '';
    await rejectsCode(svc.deleteSnapshot(tplSnap), 'invalid_state', /template "base"/);
    assert.equal(svc.listSnapshots().length, before.snaps);
    assert.equal((await host.driver.list()).length, before.vms);
  });

  it('pause/resume 5 times with a change between each: nothing lost, same id and token', async () => {
    const token = svc.get(c2).accessToken;
    const pid = await out(c2, 'cat /tmp/counter.pid');
    for (let i = 1; i <= 5; i++) {
      // Written once, before the first pause: it lives in a layer in the middle of the chain.
      if (i === 1) await out(c2, 'echo first > /home/user/first');
      await out(c2, `echo round${i} >> /home/user/log; echo ${i} > /home/user/f`);
      const p = await svc.pause(c2);
      assert.equal(p.state, 'paused');
      assert.ok(!(await host.driver.list()).includes(c2), 'a paused sandbox has no VM');
      await rejectsCode(svc.exec(c2, 'true'), 'invalid_state', /paused/);
      if (i === 1) await rejectsCode(svc.snapshot(c2), 'invalid_state', /paused/);
      const r = await svc.resume(c2);
      assert.equal(r.state, 'running');
      assert.equal(r.accessToken, token);
      assert.equal(await out(c2, 'cat /home/user/f'), String(i));
      assert.equal(await out(c2, 'wc -l < /home/user/log'), String(i));
      assert.equal(await out(c2, 'cat /tmp/counter.pid'), pid);
      assert.equal(await out(c2, `kill -0 ${pid} && echo alive`), 'alive');
    }
    await counterMoves(c2);
    // Each pause's disk layer sits on the previous one: a chain longer than the limit.
    assert.equal(svc.listSnapshots({ kind: 'pause' }).length, 5);
    assert.ok(5 + 2 > MAX_DISK_CHAIN);
  });

  it('flattens long disk chains and the sandbox still pauses and resumes', async () => {
    const flattened = await svc.flattenChains();
    const s = svc.get(c2);
    const snap = svc.getSnapshot(s.sourceSnapshotId ?? '');
    assert.ok(flattened.length > 0, 'a chain of 6 layers is flattened');
    assert.equal(snap.parentId, svc.getSnapshot('first').parentId, 'now one layer over the template');
    assert.equal(svc.listSnapshots({ kind: 'pause' }).length, 1, 'unused pause layers were removed');
    await svc.pause(c2);
    await svc.resume(c2);
    assert.equal(await out(c2, 'cat /home/user/f; wc -l < /home/user/log'), '5\n5');
    // A cold boot reads the flattened disk itself (no page cache): the middle layers' data is in it.
    await svc.pause(c2, {}, { memory: false });
    await svc.resume(c2);
    assert.equal(await out(c2, 'cat /home/user/first /home/user/f; wc -l < /home/user/log'), 'first\n5\n5');
  });

  it('forks into 4: every clone has the state, the source goes on', async () => {
    await out(src, 'echo forked > /home/user/g');
    const r = await svc.fork(src, { count: 4 });
    assert.equal(r.results.length, 4);
    const ids = r.results.map((x) => {
      assert.ok('sandbox' in x, 'error' in x ? x.error.message : '');
      return x.sandbox.id;
    });
    assert.equal(new Set(ids).size, 4);
    for (const id of ids) {
      assert.equal(await out(id, 'cat /home/user/g /home/user/f'), 'forked\nsrc2');
      await counterMoves(id);
    }
    assert.equal(svc.get(src).state, 'running');
    for (const id of ids) await svc.kill(id);
  });

  it('exports a snapshot to one archive that another host imports and restores', async () => {
    const archive = join(root, 'first.tar');
    await svc.exportSnapshot('first', createWriteStream(archive));
    // "Another host": its own state, data and VMs, and no template yet.
    const host2 = await realHost({ dir: `${root}/host2`, image: false });
    const svc2 = host2.service();
    try {
      const imported = await svc2.importSnapshot(createReadStream(archive));
      assert.equal(imported.id, snapId);
      assert.equal(imported.name, 'first');
      assert.deepEqual(imported.artifacts.map((a) => a.kind).sort(), [
        'disk',
        'initrd',
        'kernel',
        'memory',
        'state',
      ]);
      const c = await svc2.restore('first');
      assert.equal((await svc2.exec(c.id, 'cat /home/user/f')).stdout, 'v1\n');
      // Its clones pause and resume there too: their snapshots carry the imported boot files.
      await svc2.exec(c.id, 'echo on-host2 > /home/user/h');
      await svc2.pause(c.id);
      await svc2.resume(c.id);
      assert.equal((await svc2.exec(c.id, 'cat /home/user/f /home/user/h')).stdout, 'v1\non-host2\n');
      await svc2.kill(c.id);
      await rejectsCode(svc2.importSnapshot(createReadStream(archive)), 'already_exists', /first|snap-/);
      // Damage one byte in the middle: refused, and nothing is recorded or left behind.
      const size = (await stat(archive)).size;
      const fh = await open(archive, 'r+');
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, Math.floor(size / 2));
      b[0] = (b[0] ?? 0) ^ 0xff;
      await fh.write(b, 0, 1, Math.floor(size / 2));
      await fh.close();
      const store3 = new SqliteStore(`${root}/host3/state.db`);
      const svc3 = wireService({
        store: store3,
        driver: host2.driver,
        dataDir: `${root}/host3/data`,
        image: undefined,
      });
      await rejectsCode(
        svc3.importSnapshot(createReadStream(archive)),
        'invalid_argument',
        /SHA-256|damaged/,
      );
      await truncate(archive, Math.floor(size / 3));
      await rejectsCode(svc3.importSnapshot(createReadStream(archive)), 'invalid_argument', /truncated/);
      assert.deepEqual(svc3.listSnapshots(), []);
      assert.deepEqual(await readdir(`${root}/host3/data/snapshots`), []);
      assert.deepEqual(store3.openOperations(), []);
      store3.close();
    } finally {
      await host2.close();
      await rm(archive, { force: true });
    }
  });

  it('deletes a snapshot while its clones run: gone at once; its files go when the last one ends', async () => {
    await svc.deleteSnapshot('first');
    await rejectsCode(svc.restore('first'), 'not_found');
    assert.deepEqual(await Promise.all([c1, c2].map((id) => out(id, 'echo alive'))), ['alive', 'alive']);
    assert.ok(existsSync(join(root, 'data', 'snapshots', snapId)), 'its clones stand on its layer');
    await svc.kill(c1);
    await svc.kill(c2);
    await svc.kill(src);
    assert.ok(!existsSync(join(root, 'data', 'snapshots', snapId)));
    // Only the template's own snapshot is left: internal snapshots went with their sandboxes.
    assert.deepEqual(
      svc.listSnapshots().map((x) => x.kind),
      ['template'],
    );
    assert.equal((await readdir(join(root, 'data', 'snapshots'))).length, 1);
    assert.deepEqual(await host.driver.list(), []);
  });
});
