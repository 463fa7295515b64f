/**
 * The dashboard's routes in-process (fake driver and guests, a real HTTP socket on loopback):
 * a build's log as a live event stream (a line reaches the browser while its step still runs,
 * a reconnect resumes from Last-Event-ID, the end closes it), the images route and its scope,
 * fork with a count. The browser side runs in test/integration/dashboard.test.ts.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { DashFork, DashImage, DashSession } from '../../core/dashboard-types.ts';
import { nullLogger } from '../../core/log.ts';
import type { ApiKeyService } from '../../daemon/api-keys.ts';
import type { GuestFiles } from '../../daemon/dashboard/guest-files.ts';
import type { HostUsageReader } from '../../daemon/dashboard/host-usage.ts';
import { ImageCatalog } from '../../daemon/dashboard/image-catalog.ts';
import type { TerminalService } from '../../daemon/dashboard/terminals.ts';
import type { ExecResult } from '../../daemon/guest-client.ts';
import { MAX_FORK } from '../../daemon/sandbox-service.ts';
import type { Caller } from '../../daemon/scope.ts';
import { TemplateBuildService } from '../../daemon/templates/build-service.ts';
import { FakeGuests, ServiceFixture } from '../../daemon/testing/fixtures.ts';
import { stageImage } from '../../daemon/testing/images.ts';
import { SESSION_COOKIE } from './guard.ts';
import { createDashboard, type Dashboard } from './server.ts';
import { SessionStore } from './session.ts';

let fx: ServiceFixture;
let tb: TemplateBuildService;
let sessions: SessionStore;
let dash: Dashboard;
let server: Server;
let base: string;
/** The guest command "slow" writes a line, then waits for this before its second. */
let letGo: () => void;

const IMG = 'a'.repeat(32);

/** A session's cookie and CSRF token. */
function signIn(caller: Caller | undefined): { cookie: string; csrf: string } {
  const { cookie, session } = sessions.create(caller, 'test');
  return { cookie: `${SESSION_COOKIE}=${cookie}`, csrf: session.csrf };
}

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- T names what the route answers
async function call<T>(
  who: { cookie: string; csrf: string },
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const r = await fetch(base + path, {
    method,
    headers: {
      cookie: who.cookie,
      ...(method === 'GET' ? {} : { 'x-csrf-token': who.csrf, 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.status, body: (await r.json()) as T };
}

/** An event stream's text, read until `done` says it has enough (or the stream ends). */
async function readSse(r: Response, done: (text: string) => boolean): Promise<string> {
  const reader = r.body?.getReader();
  assert.ok(reader);
  const dec = new TextDecoder();
  let text = '';
  while (!done(text)) {
    const { value, done: end } = (await reader.read()) as {
      value?: Uint8Array;
      done: boolean;
    };
    if (end) return text + '<closed>';
    text += dec.decode(value, { stream: true });
  }
  await reader.cancel();
  return text;
}

describe('dashboard routes (fake driver)', () => {
  beforeEach(async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    letGo = release;
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
    tb = new TemplateBuildService({
      svc: fx.svc,
      store: fx.store,
      dataDir: fx.dir,
      log: nullLogger,
      ensureTemplate: () => Promise.resolve(),
    });
    sessions = new SessionStore();
    await stageImage(join(fx.dir, 'cache'), IMG, { name: 'default' });
    const baseTpl = fx.svc.templates().find((t) => t.name === 'base');
    assert.ok(baseTpl);
    fx.store.putTemplate({ ...baseTpl, imageKey: IMG });
    dash = createDashboard(
      {
        svc: fx.svc,
        keys: { list: () => [{ id: 'key-a' }, { id: 'key-b' }] } as unknown as ApiKeyService,
        sessions,
        builds: tb,
        terminals: { close: () => undefined } as unknown as TerminalService,
        files: {} as unknown as GuestFiles,
        host: {} as unknown as HostUsageReader,
        images: new ImageCatalog({ svc: fx.svc, cacheDir: join(fx.dir, 'cache') }),
        version: 'test',
        sandboxDomain: () => 'localhost',
        webDir: undefined,
      },
      nullLogger,
    );
    server = createServer((req, res) => {
      dash.handle(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
  });
  afterEach(async () => {
    letGo();
    await tb.idle();
    dash.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await fx.close();
  });

  it("streams a build's log: a line while its step runs, a reconnect resumes, the end closes the stream", async () => {
    const root = signIn(undefined);
    const b = tb.request('live', {}, undefined);
    const path = `/api/templates/${b.templateId}/builds/${b.id}/log`;
    tb.start(
      b.templateId,
      b.id,
      { fromTemplate: 'base', steps: [{ type: 'RUN', args: ['slow'] }] },
      undefined,
    );
    const r = await fetch(base + path, { headers: { cookie: root.cookie } });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/);
    const early = await readSse(r, (t) => t.includes('first line'));
    assert.doesNotMatch(early, /second line|event: end/, 'the step is still running');
    const ids = [...early.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    const seen = ids.at(-1) ?? 0;
    assert.ok(seen >= 2, early);
    // The browser's reconnect: kilnd resumes after what it had.
    const again = await fetch(base + path, {
      headers: { cookie: root.cookie, 'last-event-id': String(seen) },
    });
    letGo();
    const rest = await readSse(again, () => false);
    assert.doesNotMatch(rest, /first line/, 'nothing it had is sent again');
    assert.match(
      rest,
      /second line[\s\S]*template live built in[\s\S]*event: end\ndata: \{"status":"ready","reason":null\}/,
    );
    assert.match(rest, /<closed>$/, 'the stream ends after the end event');
    assert.equal(tb.watch.waiting, 0, 'no follower is left waiting');
  });

  it('a build log the session does not see is a plain 404, before any stream', async () => {
    const b = tb.request('theirs', {}, { keyId: 'key-b', admin: false });
    const a = signIn({ keyId: 'key-a', admin: false });
    const r = await call<{ code: string }>(a, 'GET', `/api/templates/${b.templateId}/builds/${b.id}/log`);
    assert.deepEqual([r.status, r.body.code], [404, 'not_found']);
    const bad = await call<{ code: string }>(
      signIn(undefined),
      'GET',
      `/api/templates/${b.templateId}/builds/${b.id}/log?offset=-1`,
    );
    assert.deepEqual([bad.status, bad.body.code], [400, 'invalid_argument']);
  });

  it('GET /api/images: the images of the templates a session sees; nothing without a session', async () => {
    const r = await call<DashImage[]>(signIn({ keyId: 'key-a', admin: false }), 'GET', '/api/images');
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.map((i) => [i.key, i.names, i.templates]),
      [[IMG, ['default'], ['base']]],
    );
    assert.equal((await fetch(`${base}/api/images`)).status, 401);
  });

  it('fork with a count: that many clones, each by id; past the bound refused', async () => {
    const root = signIn(undefined);
    const s = await fx.svc.create({ template: 'base' });
    const session = await call<DashSession>(root, 'GET', '/api/session');
    assert.equal(session.body.forkMax, MAX_FORK);
    const r = await call<DashFork>(root, 'POST', `/api/sandboxes/${s.id}/fork`, { count: 2 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.sandboxes.length, 2);
    assert.deepEqual(r.body.errors, []);
    for (const id of r.body.sandboxes) assert.equal(fx.svc.get(id).state, 'running');
    const over = await call<{ code: string }>(root, 'POST', `/api/sandboxes/${s.id}/fork`, {
      count: MAX_FORK + 1,
    });
    assert.deepEqual([over.status, over.body.code], [400, 'invalid_argument']);
  });
});
