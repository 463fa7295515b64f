/**
 * Template builds over the fake driver and fake guests (their exec answers `ran <cmd>`, exit 4
 * when the command says "fail"): the layer cache, the failure reason, delete, and start-up after
 * a build was cut by a daemon death. The real thing runs in test/integration/e2b-templates.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { pino } from 'pino';
import type { RegistryLogin } from '../../core/registry-login.ts';
import { nullLogger } from '../../core/log.ts';
import { FAKE_IMAGE, ServiceFixture, blockingGuests } from '../testing/fixtures.ts';
import { CANCELLED } from './run-build.ts';
import { INTERRUPTED, TemplateBuildService } from './build-service.ts';

let f: ServiceFixture;
let tb: TemplateBuildService;

const steps = (third: string) => ({
  fromTemplate: 'base',
  startCmd: 'server',
  readyCmd: 'true',
  steps: [
    { type: 'RUN', args: ['echo one'] },
    { type: 'ENV', args: ['A', '1'] },
    { type: 'RUN', args: [third] },
    { type: 'RUN', args: ['echo four', 'root'] },
  ],
});

async function build(
  name: string,
  body: Record<string, unknown>,
  res: { vcpus?: number; memoryMiB?: number } = {},
) {
  const b = tb.request(name, res, undefined);
  tb.start(b.templateId, b.id, body, undefined);
  await tb.idle();
  const st = tb.status(b.templateId, b.id, 0, undefined);
  return { ...st, messages: st.logs.map((l) => l.message) };
}

const service = (): TemplateBuildService =>
  new TemplateBuildService({
    svc: f.svc,
    store: f.store,
    dataDir: f.dir,
    log: nullLogger,
    ensureTemplate: () => Promise.resolve(),
    readyTimeoutMs: 1000,
    image: () => Promise.resolve(FAKE_IMAGE),
  });

const runLines = (m: string[]) => m.filter((l) => /^\[\d\/\d\] /.test(l)).map((l) => l.slice(0, 5));

/** Replaces the fixture with one whose guests block on "block" (`running`: one does). */
async function blockingFixture(): Promise<{ running: Promise<void> }> {
  await f.close();
  const { guest, running } = blockingGuests();
  f = await ServiceFixture.start({ base: true, deps: { guest } });
  return { running };
}

describe('template builds (fake driver)', () => {
  beforeEach(async () => {
    f = await ServiceFixture.start({ base: true });
    tb = service();
  });
  afterEach(async () => {
    await f.close();
  });

  it('a cancelled build stops at its running step: no later step, layer or template; its builder killed', async () => {
    const { running } = await blockingFixture();
    tb = service();
    const b = tb.request('slow', {}, undefined);
    tb.start(b.templateId, b.id, steps('block here'), undefined);
    await running;
    const ended = await tb.cancel(b.id, undefined);
    assert.equal(ended.status, 'error');
    assert.deepEqual(ended.reason, { message: CANCELLED, step: '3' });
    const messages = tb.status(b.templateId, b.id, 0, undefined).logs.map((l) => l.message);
    assert.deepEqual(runLines(messages), ['[1/4]', '[2/4]', '[3/4]'], 'step 4 never started');
    assert.equal(ended.snapshotId, null, 'no template snapshot');
    assert.equal(f.svc.templates().find((t) => t.name === 'slow')?.snapshotId ?? null, null);
    assert.equal(
      f.store.listSnapshots({ deleted: false }).filter((x) => x.name?.startsWith('kiln-layer-')).length,
      1,
      "only the finished step's layer (the cache) exists",
    );
    assert.deepEqual(
      f.svc
        .list({})
        .items.filter((x) => x.state !== 'dead')
        .map((x) => x.id),
      [],
      'the builder sandbox is killed',
    );
    await assert.rejects(tb.cancel(b.id, undefined), {
      code: 'invalid_state',
      message: /is error, not running/,
    });
  });

  it('a build is one journalled operation: build, builder, published; done when it ends', async () => {
    await f.close();
    const seen: string[] = [];
    f = await ServiceFixture.start({
      base: true,
      deps: { failpoint: (kind, name) => kind === 'build' && seen.push(name) },
    });
    tb = service();
    const r = await build('app', steps('echo three'));
    assert.equal(r.build.status, 'ready');
    assert.deepEqual(seen, ['build', 'builder', 'published']);
    assert.deepEqual(f.store.openOperations(), []);
  });

  it('kilnd dying in a step: replaying the open build operation fails the build and ends its builder', async () => {
    const { running } = await blockingFixture();
    tb = service();
    const b = tb.request('cut', {}, undefined);
    tb.start(b.templateId, b.id, steps('block here'), undefined);
    await running;
    const ops = f.store.openOperations().filter((o) => o.kind === 'build');
    assert.equal(ops.length, 1);
    const [op] = ops;
    assert.ok(op);
    assert.equal(op.subject, b.id);
    assert.deepEqual(
      op.steps.map((x) => x.name),
      ['build', 'builder'],
    );
    const builder = f.store.getBuild(b.id).builderId;
    assert.ok(builder);
    // The daemon dies here: a new service over the same store and VMs replays the journal.
    const rec = await f.restarted().reconcile();
    assert.ok(rec.unwound.includes(op.id), JSON.stringify(rec));
    const after = f.store.getBuild(b.id);
    assert.equal(after.status, 'error');
    assert.deepEqual(after.reason, { message: INTERRUPTED, step: 'finalize' });
    assert.equal(after.builderId, null);
    assert.equal(f.store.buildLogs(b.id, 0, 1000).at(-1)?.message, INTERRUPTED);
    assert.equal(f.store.getSandbox(builder).state, 'dead');
    assert.ok(!(await f.driver.list()).includes(builder), 'the builder VM is gone');
    assert.deepEqual(f.store.openOperations(), []);
    assert.equal(f.svc.templates().find((t) => t.name === 'cut')?.snapshotId ?? null, null);
    // Nothing is left for the build service's own start-up pass.
    assert.deepEqual(await service().recover(), []);
    await tb.cancel(b.id, undefined).catch(() => undefined);
  });

  it("the last USER and WORKDIR become the defaults of the template's sandboxes (set in the builder's agent)", async () => {
    const before = f.guests.inits.length;
    const r = await build('app', {
      fromTemplate: 'base',
      steps: [
        { type: 'WORKDIR', args: ['/srv'] },
        { type: 'USER', args: ['root'] },
        { type: 'RUN', args: ['echo x'] },
        { type: 'WORKDIR', args: ['app'] },
        { type: 'USER', args: ['user'] },
      ],
    });
    assert.equal(r.build.status, 'ready', r.messages.join('\n'));
    const defaults = f.guests.inits
      .slice(before)
      .map((i) => ({ user: i.body.defaultUser, workdir: i.body.defaultWorkdir }))
      .filter((x) => x.user !== undefined || x.workdir !== undefined);
    assert.deepEqual(defaults, [{ user: 'user', workdir: '/srv/app' }]);
    assert.ok(
      r.messages.includes('[finalize] sandboxes run commands as user in /srv/app'),
      r.messages.join('\n'),
    );
    // Without USER or WORKDIR steps nothing is set: sandboxes keep the parent's defaults.
    const n = f.guests.inits.length;
    await build('plain', { fromTemplate: 'base', steps: [{ type: 'RUN', args: ['echo y'] }] });
    assert.ok(
      f.guests.inits
        .slice(n)
        .every((i) => i.body.defaultUser === undefined && i.body.defaultWorkdir === undefined),
    );
  });

  it('builds, caches every step on a rebuild, re-runs from the first changed step; hides its layers', async () => {
    const first = await build('web', steps('echo three'));
    assert.equal(first.build.status, 'ready', first.messages.join('\n'));
    assert.deepEqual(runLines(first.messages), ['[1/4]', '[2/4]', '[3/4]', '[4/4]']);
    assert.ok(first.messages.includes('ran echo one'));
    assert.equal(first.build.layers.length, 3, 'one layer per RUN');
    const tpl = f.svc.templates().find((t) => t.name === 'web');
    assert.equal(tpl?.snapshotId, first.build.snapshotId);
    assert.deepEqual(
      f.svc.listSnapshots({ kind: 'snapshot' }),
      [],
      'layers and the template snapshot are not listed',
    );
    // The builder sandbox is gone.
    assert.deepEqual(
      f.svc
        .list({})
        .items.filter((s) => s.state !== 'dead')
        .map((s) => s.id),
      [],
    );

    const again = await build('web', steps('echo three'));
    assert.deepEqual(runLines(again.messages), []);
    assert.equal(again.messages.filter((m) => /^CACHED \[\d/.test(m)).length, 4);
    assert.ok(again.messages.includes('0 of 4 steps run, 4 cached'));

    const changed = await build('web', steps('echo THREE'));
    assert.deepEqual(runLines(changed.messages), ['[3/4]', '[4/4]']);
    assert.equal(changed.build.templateId, first.build.templateId, 'the name keeps its template id');

    const forced = await build('web', { ...steps('echo THREE'), force: true });
    assert.deepEqual(runLines(forced.messages), ['[1/4]', '[2/4]', '[3/4]', '[4/4]']);

    await tb.delete('web', undefined, 'op-t');
    assert.equal(
      f.svc.templates().some((t) => t.name === 'web'),
      false,
    );
    assert.throws(() => tb.get('web', undefined), /does not exist/);
    const live = f.store.listSnapshots({ deleted: false }).filter((s) => s.name?.startsWith('kiln-'));
    assert.deepEqual(live, [], 'no live layer is left');
  });

  it('a failing step fails the build with its step, exit code and output; no template is made', async () => {
    const r = await build('bad', {
      fromTemplate: 'base',
      steps: [
        { type: 'RUN', args: ['echo ok'] },
        { type: 'RUN', args: ['please fail'] },
      ],
    });
    assert.equal(r.build.status, 'error');
    const reason = r.build.reason;
    assert.ok(reason);
    assert.equal(reason.step, '2');
    assert.match(reason.message, /step 2 \(RUN please fail\) failed with exit code 4:\nran please fail/);
    assert.ok(r.tail.some((l) => l.level === 'error'));
    assert.equal(
      f.svc.templates().some((t) => t.name === 'bad'),
      false,
    );
  });

  it('a ready command that never passes fails at its deadline', async () => {
    const r = await build('never', { fromTemplate: 'base', startCmd: 'server', readyCmd: 'fail always' });
    assert.equal(r.build.status, 'error');
    assert.match(
      r.build.reason?.message ?? '',
      /the ready command did not succeed within 1 s \(last exit code 4\)/,
    );
  });

  it('cpuCount / memoryMB: a twin of an image-booted parent with them; refused on a step-built parent', async () => {
    const r = await build(
      'big',
      { fromTemplate: 'base', steps: [{ type: 'RUN', args: ['echo x'] }] },
      { memoryMiB: 1024, vcpus: 2 },
    );
    assert.equal(r.build.status, 'ready', r.messages.join('\n'));
    const t = f.svc.templates().find((x) => x.name === 'big');
    assert.deepEqual([t?.memoryMiB, t?.vcpus], [1024, 2]);
    assert.equal(f.svc.getSnapshot(t?.snapshotId ?? '').memoryMiB, 1024);
    const on = await build('bigger', { fromTemplate: 'big', steps: [] }, { memoryMiB: 2048 });
    assert.equal(on.build.status, 'error');
    assert.match(on.build.reason?.message ?? '', /runs with 2 vCPU\(s\) and 1024 MiB/);
  });

  it('registry credentials reach the image pull and nothing else: not the stored record, the log, the database', async () => {
    const secret = 'pw-c4f1e9-SECRET';
    const lines: string[] = [];
    const log = pino(
      { level: 'trace' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(chunk.toString());
          cb();
        },
      }),
    );
    const pulls: { reference: string; username?: string; password?: string; shown: string }[] = [];
    tb = new TemplateBuildService({
      svc: f.svc,
      store: f.store,
      dataDir: f.dir,
      log,
      ensureTemplate: () => Promise.resolve(),
      readyTimeoutMs: 1000,
      imageTemplate: (reference: string, _opId: string, login?: RegistryLogin) => {
        pulls.push({
          reference,
          ...(login ? { username: login.username, password: login.password } : {}),
          shown: `${JSON.stringify(login)} ${inspect(login)} ${inspect(structuredClone(login))}`,
        });
        return Promise.resolve('base');
      },
    });
    const body = {
      fromImage: '127.0.0.1:5000/private/app:1',
      fromImageRegistry: { type: 'registry', username: 'robot', password: secret },
      steps: [{ type: 'RUN', args: ['echo hi'] }],
    };
    const r = await build('priv', body);
    assert.equal(r.build.status, 'ready', JSON.stringify(r.build.reason));
    assert.equal(pulls.length, 1);
    assert.deepEqual(
      { ...pulls[0], shown: undefined },
      { reference: body.fromImage, username: 'robot', password: secret, shown: undefined },
    );
    // Every printed form of the credentials hides the password.
    assert.ok(!pulls[0]?.shown.includes(secret), pulls[0]?.shown);
    const stored = f.store.getBuild(r.build.id);
    assert.deepEqual((JSON.parse(stored.spec ?? 'null') as { from: unknown }).from, {
      image: body.fromImage,
      registry: { type: 'registry' },
    });
    assert.ok(!JSON.stringify(stored).includes(secret));
    assert.ok(!r.messages.join('\n').includes(secret));
    assert.ok(!lines.join('').includes(secret), lines.join(''));
    // Nor any byte of the database files (the WAL included).
    for (const n of readdirSync(f.dir).filter((x) => x.startsWith('state.db')))
      assert.ok(!readFileSync(join(f.dir, n)).includes(secret), n);
  });

  it("kiln's hidden templates are no base for fromTemplate: an OCI image's base is reached through fromImage only", async () => {
    const img = await f.svc.buildTemplate('kiln-img-private', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    for (const ref of ['kiln-img-private', img.id]) {
      const r = await build('sneak', { fromTemplate: ref, steps: [{ type: 'RUN', args: ['cat /secret'] }] });
      assert.equal(r.build.status, 'error');
      assert.equal(r.build.reason?.message, `fromTemplate("${ref}"): no such template`);
    }
  });

  it('bad input is refused before anything runs (the build ends, its name free); a second build of a name in flight is refused', () => {
    const b = tb.request('x', {}, undefined);
    assert.throws(() => {
      tb.start(b.templateId, b.id, { steps: [] }, undefined);
    }, /exactly one of fromImage and fromTemplate/);
    const st = tb.status(b.templateId, b.id, 0, undefined);
    assert.equal(st.build.status, 'error');
    assert.match(st.build.reason?.message ?? '', /exactly one of fromImage and fromTemplate/);
    assert.match(st.logs.at(-1)?.message ?? '', /exactly one of fromImage and fromTemplate/);
    tb.request('x', {}, undefined);
    assert.throws(() => tb.request('x', {}, undefined), /is being built/);
    assert.throws(() => tb.request('base', {}, undefined), /kiln's default template/);
    assert.throws(() => tb.request('Bad Name', {}, undefined), /must be lower-case/);
  });

  it('start-up fails a build a dead daemon left running and kills its builder', async () => {
    const b = tb.request('cut', {}, undefined);
    const sbx = await f.svc.create({ template: 'base' });
    f.store.putBuild({ ...b, spec: '{}', builderId: sbx.id });
    const after = new TemplateBuildService({
      svc: f.svc,
      store: f.store,
      dataDir: f.dir,
      log: nullLogger,
      ensureTemplate: () => Promise.resolve(),
    });
    assert.deepEqual(await after.recover(), [b.id]);
    const st = after.status(b.templateId, b.id, 0, undefined);
    assert.equal(st.build.status, 'error');
    assert.equal(st.build.reason?.message, INTERRUPTED);
    assert.equal(st.logs.at(-1)?.message, INTERRUPTED);
    assert.equal(f.svc.get(sbx.id).state, 'dead');
  });
});
