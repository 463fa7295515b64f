/**
 * Following a build's log: lines reach a follower as they are appended (woken by the build, no
 * timer), in order from its offset, and the end comes once, after the last line. First over a
 * log held in memory, then through a real build run (fake driver, a guest whose command writes
 * a line, waits, then writes another).
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TemplateBuildRecord } from '../../core/domain.ts';
import { nullLogger } from '../../core/log.ts';
import type { BuildLogEntry } from '../../core/template-steps.ts';
import type { ExecResult } from '../guest-client.ts';
import { FakeGuests, ServiceFixture } from '../testing/fixtures.ts';
import { BuildWatch, FOLLOW_PAGE, followBuild, type BuildFollowEvent } from './build-follow.ts';
import { TemplateBuildService } from './build-service.ts';

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A build's log and status in memory; `append` and `finish` pulse the watch as a build run does. */
class MemoryLog {
  readonly lines: BuildLogEntry[] = [];
  status: TemplateBuildRecord['status'] = 'building';
  readonly watch = new BuildWatch();
  append(message: string): void {
    this.lines.push({ timestamp: '2026-06-01T00:00:00.000Z', level: 'info', message });
    this.watch.changed('bld-1');
  }
  finish(status: TemplateBuildRecord['status']): void {
    this.status = status;
    this.watch.changed('bld-1');
  }
  buildLogs(_id: string, offset: number, limit: number): BuildLogEntry[] {
    return this.lines.slice(offset, offset + limit);
  }
  getBuild(id: string): TemplateBuildRecord {
    return { id, status: this.status } as TemplateBuildRecord;
  }
}

/** Runs a follower in the background, keeping what it was given. */
function collect(gen: AsyncGenerator<BuildFollowEvent, void, undefined>): {
  events: BuildFollowEvent[];
  messages: () => string[];
  done: Promise<void>;
} {
  const events: BuildFollowEvent[] = [];
  const done = (async () => {
    for await (const e of gen) events.push(e);
  })();
  const messages = (): string[] =>
    events.flatMap((e) => (e.kind === 'lines' ? e.lines.map((l) => l.message) : [`END ${e.build.status}`]));
  return { events, messages, done };
}

describe('following a build log', () => {
  it('gets the lines written so far, then each line as it is appended, then the end once', async () => {
    const log = new MemoryLog();
    log.append('one');
    log.append('two');
    const f = collect(followBuild(log, log.watch, 'bld-1', 1));
    await settle();
    assert.deepEqual(f.messages(), ['two'], 'from the offset');
    assert.equal(log.watch.waiting, 1, 'it waits for the build, no timer');
    log.append('three');
    await settle();
    assert.deepEqual(f.messages(), ['two', 'three'], 'a new line is pushed when written');
    log.append('four');
    log.append('five');
    log.finish('ready');
    await f.done;
    assert.deepEqual(f.messages(), ['two', 'three', 'four', 'five', 'END ready']);
    assert.deepEqual(
      f.events.map((e) => (e.kind === 'lines' ? e.from : -1)),
      [1, 2, 3, -1],
      'each batch says its first offset; lines written together come together',
    );
    assert.equal(log.watch.waiting, 0);
  });

  it('an ended build gives its log in pages and the end at once', async () => {
    const log = new MemoryLog();
    for (let i = 0; i < FOLLOW_PAGE + 3; i++) log.append(`l${String(i)}`);
    log.finish('error');
    const f = collect(followBuild(log, log.watch, 'bld-1', 0));
    await f.done;
    assert.deepEqual(
      f.events.map((e) => (e.kind === 'lines' ? e.lines.length : e.build.status)),
      [FOLLOW_PAGE, 3, 'error'],
    );
  });

  it('an aborted follower stops without an end and leaves no waiter', async () => {
    const log = new MemoryLog();
    const ac = new AbortController();
    const f = collect(followBuild(log, log.watch, 'bld-1', 0, ac.signal));
    await settle();
    assert.equal(log.watch.waiting, 1);
    ac.abort();
    await f.done;
    assert.deepEqual(f.events, []);
    assert.equal(log.watch.waiting, 0);
    log.append('later');
  });
});

describe('following a real build run (fake driver)', () => {
  let fx: ServiceFixture | undefined;
  afterEach(async () => {
    await fx?.close();
  });

  it("a RUN step's output reaches the follower while the step runs; the end after the last line", async () => {
    // A guest whose command "slow" writes a line, waits to be let go, then writes a second.
    let letGo: () => void = () => undefined;
    const gate = new Promise<void>((r) => (letGo = r));
    const fakes = new FakeGuests();
    fx = await ServiceFixture.start({
      base: true,
      deps: {
        guest: () => {
          const g = fakes.client();
          return {
            ...g,
            exec: async (cmd, eo): Promise<ExecResult> => {
              if (!cmd.includes('slow')) return g.exec(cmd, eo);
              await eo?.onStdout?.(new TextEncoder().encode('first line\n'));
              await gate;
              await eo?.onStdout?.(new TextEncoder().encode('second line\n'));
              return { exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' };
            },
          };
        },
      },
    });
    const tb = new TemplateBuildService({
      svc: fx.svc,
      store: fx.store,
      dataDir: fx.dir,
      log: nullLogger,
      ensureTemplate: () => Promise.resolve(),
    });
    const b = tb.request('live', {}, undefined);
    const f = collect(tb.follow(b.templateId, b.id, 0, undefined));
    tb.start(
      b.templateId,
      b.id,
      { fromTemplate: 'base', steps: [{ type: 'RUN', args: ['slow'] }] },
      undefined,
    );
    const deadline = Date.now() + 10_000;
    while (!f.messages().includes('first line') && Date.now() < deadline) await settle();
    assert.ok(f.messages().includes('first line'), f.messages().join('\n'));
    assert.equal(f.messages().includes('second line'), false, 'the step is still running');
    assert.equal(tb.watch.waiting, 1, 'the follower waits for the next line');
    letGo();
    await f.done;
    const m = f.messages();
    assert.equal(m.at(-1), 'END ready');
    assert.match(m.at(-2) ?? '', /^template live built in /, 'every line comes before the end');
    assert.ok(m.indexOf('second line') > m.indexOf('first line'));
    assert.equal(tb.watch.waiting, 0);
    await tb.idle();
  });

  it('refuses a build the caller does not see before any event', async () => {
    fx = await ServiceFixture.start({ base: true });
    const tb = new TemplateBuildService({
      svc: fx.svc,
      store: fx.store,
      dataDir: fx.dir,
      log: nullLogger,
      ensureTemplate: () => Promise.resolve(),
    });
    const b = tb.request('mine', {}, { keyId: 'key-a', admin: false });
    assert.throws(() => tb.follow(b.templateId, b.id, 0, { keyId: 'key-b', admin: false }), {
      code: 'not_found',
    });
    assert.throws(() => tb.follow(b.templateId, b.id, -1, undefined), { code: 'invalid_argument' });
  });
});
