/**
 * The E2B-compatible API and the envd proxy in-process, over the sandbox service with the fake
 * driver, driven by the real `e2b` SDK where it speaks to the control plane only (create, info,
 * list, timeout, metrics, kill) and by raw HTTP for exact status codes and bodies. The envd side
 * through real guests is test/integration/e2b-sdk.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AuthenticationError, Sandbox, SandboxNotFoundError } from 'e2b';
import { fileSignature } from '../core/envd-auth.ts';
import { nullLogger } from '../core/log.ts';
import { ApiKeyService } from '../daemon/api-keys.ts';
import type { GuestClient } from '../daemon/guest-client.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { FakeDriver } from '../vmm/fake-driver.ts';
import { e2bRouterOpts, e2bRoutes } from './e2b.ts';
import { createEnvdProxy } from './envd-proxy.ts';
import { createRouter } from './http.ts';

const IMAGE = { key: 'img-1', kernel: '/i/k', initrd: '/i/i', rootfs: '/i/r' };
/** The (fake) guest agent stopped answering. */
let guestHung = false;
const guest: GuestClient = {
  health: () =>
    guestHung
      ? Promise.reject(new Error('did not answer /health: no answer within 3000 ms'))
      : Promise.resolve(),
  init: () => Promise.resolve(),
  exec: () => Promise.resolve({ exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' }),
  metrics: () =>
    Promise.resolve({
      ts: 1_700_000_000,
      cpu_count: 1,
      cpu_used_pct: 7.5,
      mem_total: 512 * 2 ** 20,
      mem_used: 100 * 2 ** 20,
      mem_cache: 3 * 2 ** 20,
      disk_used: 2 ** 30,
      disk_total: 2 ** 31,
    }),
};

const listen = async (s: Server): Promise<string> => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
};

describe('E2B API and envd proxy (fake driver, real e2b SDK)', () => {
  let dir: string;
  let store: SqliteStore;
  let svc: SandboxService;
  let keys: ApiKeyService;
  let api: Server;
  let prox: Server;
  let closeProxy: () => void;
  let apiUrl: string;
  let sandboxUrl: string;
  let apiKey: string;
  const driver = new FakeDriver();
  let builds = 0;
  const opts = (): { apiUrl: string; sandboxUrl: string; apiKey: string } => ({ apiUrl, sandboxUrl, apiKey });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-e2b-'));
    store = new SqliteStore(':memory:');
    svc = new SandboxService({
      store,
      driver,
      guest: () => guest,
      image: () => Promise.resolve(IMAGE),
      dataDir: dir,
      log: nullLogger,
    });
    keys = new ApiKeyService({ store });
    apiKey = keys.create('test').key;
    const buildTemplate = (n: string, r: { memoryMiB: number; vcpus: number }) => {
      builds++;
      return svc.buildTemplate(n, IMAGE, r);
    };
    api = createServer(
      createRouter(e2bRoutes({ svc, keys, buildTemplate }), nullLogger, e2bRouterOpts(keys)),
    );
    const p = createEnvdProxy({ svc, log: nullLogger });
    closeProxy = p.close;
    prox = createServer(p.handle);
    apiUrl = await listen(api);
    sandboxUrl = await listen(prox);
  });
  after(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    for (const s of [api, prox]) {
      s.closeAllConnections();
      s.close();
    }
    closeProxy();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const raw = async (method: string, path: string, body?: unknown, key: string | null = apiKey) => {
    const r = await fetch(apiUrl + path, {
      method,
      headers: { 'content-type': 'application/json', ...(key === null ? {} : { 'x-api-key': key }) },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await r.text();
    return { status: r.status, headers: r.headers, json: text ? (JSON.parse(text) as unknown) : undefined };
  };

  it('a missing or wrong API key is 401 {code, message}; the SDK raises AuthenticationError', async () => {
    const none = await raw('GET', '/v2/sandboxes', undefined, null);
    assert.equal(none.status, 401);
    assert.deepEqual(none.json, {
      code: 401,
      message: 'missing API key: set the X-API-KEY header (E2B_API_KEY)',
    });
    const wrong = await raw('GET', '/sandboxes/x', undefined, 'e2b_' + '0'.repeat(40));
    assert.deepEqual([wrong.status, (wrong.json as { code: number }).code], [401, 401]);
    await assert.rejects(Sandbox.create('base', { ...opts(), apiKey: 'e2b_wrong' }), AuthenticationError);
    await assert.rejects(Sandbox.list({ ...opts(), apiKey: 'e2b_wrong' }).nextItems(), AuthenticationError);
    assert.equal(builds, 0, 'nothing was built for an unauthenticated request');
  });

  it('create "base" builds the template once on first use; info, metrics, timeout and kill through the SDK', async () => {
    const [sbx, twin] = await Promise.all([
      Sandbox.create('base', { ...opts(), metadata: { team: 'a' }, timeoutMs: 60_000 }),
      Sandbox.create('base', opts()),
    ]);
    assert.equal(builds, 1, 'two first creates wait for one build');
    await twin.kill();
    assert.match(sbx.sandboxId, /^sbx-/);
    const rec = svc.get(sbx.sandboxId);
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, rec.templateId);
    assert.equal(info.name, 'base');
    assert.deepEqual(info.metadata, { team: 'a' });
    assert.equal(info.state, 'running');
    assert.equal(info.envdVersion, '0.6.13');
    assert.equal(info.cpuCount, 1);
    assert.equal(info.memoryMB, 512);
    assert.equal(info.allowInternetAccess, true);
    assert.deepEqual(info.lifecycle, { autoResume: false, onTimeout: 'kill' });
    assert.equal(info.endAt.getTime(), Date.parse(rec.endAt));
    assert.ok(Math.abs(info.endAt.getTime() - Date.now() - 60_000) < 5000);
    await sbx.setTimeout(3600_000);
    assert.ok((await sbx.getInfo()).endAt.getTime() > Date.now() + 3500_000);
    assert.deepEqual(await sbx.getMetrics(), [
      {
        timestamp: new Date(1_700_000_000_000),
        cpuUsedPct: 7.5,
        cpuCount: 1,
        memUsed: 100 * 2 ** 20,
        memTotal: 512 * 2 ** 20,
        memCache: 3 * 2 ** 20,
        diskUsed: 2 ** 30,
        diskTotal: 2 ** 31,
      },
    ]);
    const again = await Sandbox.create('base', opts());
    assert.equal(builds, 1, 'built once');
    assert.equal(await Sandbox.kill(again.sandboxId, opts()), true);
    assert.equal(await Sandbox.kill(again.sandboxId, opts()), false, 'a dead sandbox is not found');
    await assert.rejects(Sandbox.getInfo(again.sandboxId, opts()), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(again.sandboxId, opts()), SandboxNotFoundError);
    await assert.rejects(Sandbox.setTimeout('sbx-nope', 1000, opts()), SandboxNotFoundError);
    await sbx.kill();
  });

  it('list: metadata and state filters as the SDK encodes them, X-Next-Token paging, dead ones left out', async () => {
    const made = [];
    for (let i = 0; i < 5; i++)
      made.push(
        await Sandbox.create('base', { ...opts(), metadata: { batch: 'L', 'odd key&=': `v ${i % 2}` } }),
      );
    await made[4]?.kill();
    const pager = Sandbox.list({
      ...opts(),
      query: { metadata: { batch: 'L' }, state: ['running'] },
      limit: 2,
    });
    const seen: string[] = [];
    let pages = 0;
    while (pager.hasNext) {
      const items = await pager.nextItems();
      pages++;
      for (const s of items) {
        assert.equal(s.state, 'running');
        assert.equal(s.metadata['batch'], 'L');
        seen.push(s.sandboxId);
      }
    }
    assert.deepEqual(
      seen,
      made.slice(0, 4).map((s) => s.sandboxId),
    );
    assert.equal(pages, 2);
    const odd = await Sandbox.list({ ...opts(), query: { metadata: { 'odd key&=': 'v 1' } } }).nextItems();
    assert.deepEqual(
      odd.map((s) => s.sandboxId),
      [made[1]?.sandboxId, made[3]?.sandboxId],
    );
    const paused = await Sandbox.list({ ...opts(), query: { state: ['paused'] } }).nextItems();
    assert.deepEqual(paused, []);
    const page = await raw('GET', '/v2/sandboxes?metadata=batch%3DL&limit=3');
    assert.equal(page.headers.get('x-next-token') !== null, true);
    for (const s of made.slice(0, 4)) await s.kill();
  });

  it('pause (204, then 409), connect resumes (201) or just connects (200), snapshots and fork: exact shapes', async () => {
    const created = await raw('POST', '/v2/sandboxes', { templateID: 'base' });
    const id = (created.json as { sandboxID: string }).sandboxID;
    const token = (created.json as { envdAccessToken: string }).envdAccessToken;
    assert.equal((await raw('POST', `/sandboxes/${id}/pause`, {})).status, 204);
    const again = await raw('POST', `/sandboxes/${id}/pause`, {});
    assert.deepEqual(
      [again.status, again.json],
      [409, { code: 409, message: `sandbox ${id} is already paused` }],
    );
    assert.equal(((await raw('GET', `/sandboxes/${id}`)).json as { state: string }).state, 'paused');
    const resumed = await raw('POST', `/v2/sandboxes/${id}/connect`, { timeout: 60 });
    assert.equal(resumed.status, 201);
    assert.equal((resumed.json as { envdAccessToken: string }).envdAccessToken, token, 'same token');
    assert.equal((await raw('POST', `/v2/sandboxes/${id}/connect`, {})).status, 200);
    const snap = await raw('POST', `/sandboxes/${id}/snapshots`, { name: 'api-snap' });
    assert.equal(snap.status, 201);
    const snapId = (snap.json as { snapshotID: string }).snapshotID;
    assert.deepEqual(snap.json, { snapshotID: snapId, names: ['api-snap'] });
    const listed = await raw('GET', `/snapshots?sandboxID=${id}`);
    assert.deepEqual(listed.json, [{ snapshotID: snapId, names: ['api-snap'] }]);
    const fromSnap = await raw('POST', '/v2/sandboxes', { templateID: 'api-snap' });
    assert.equal(fromSnap.status, 201);
    const forked = await raw('POST', `/sandboxes/${id}/fork`, { count: 2, timeout: 60 });
    assert.equal(forked.status, 201);
    const results = forked.json as { sandbox: { sandboxID: string; envdVersion: string } }[];
    assert.equal(results.length, 2);
    for (const r of results) assert.equal(r.sandbox.envdVersion, '0.6.13');
    assert.equal((await raw('DELETE', `/templates/${snapId}`)).status, 204);
    assert.deepEqual((await raw('GET', `/snapshots?sandboxID=${id}`)).json, []);
    assert.equal((await raw('POST', '/v2/sandboxes', { templateID: 'api-snap' })).status, 404);
    assert.equal((await raw('DELETE', `/templates/${snapId}`)).status, 404);
    for (const x of [
      id,
      (fromSnap.json as { sandboxID: string }).sandboxID,
      ...results.map((r) => r.sandbox.sandboxID),
    ])
      assert.equal((await raw('DELETE', `/sandboxes/${x}`)).status, 204);
    assert.equal((await raw('POST', '/sandboxes/sbx-nope/pause', {})).status, 404);
    assert.equal((await raw('POST', '/sandboxes/sbx-nope/fork', { count: 1 })).status, 404);
    assert.equal((await raw('POST', `/sandboxes/${id}/snapshots`, {})).status, 404, 'a dead sandbox is gone');
    assert.equal((await raw('GET', '/snapshots?limit=0')).status, 400);
    assert.equal((await raw('DELETE', '/templates/not..valid')).status, 404, 'the SDK answers false');
  });

  it("API keys are scoped: another key's sandboxes and snapshots answer exactly as missing ones; admin keys see all", async () => {
    const keyA = apiKey;
    const keyB = keys.create('b').key;
    const keyAdmin = keys.create('ops', { admin: true }).key;
    const as = (key: string) => (method: string, path: string, body?: unknown) =>
      raw(method, path, body, key);
    const [A, B, Admin] = [as(keyA), as(keyB), as(keyAdmin)];
    const idOf = (r: { json: unknown }): string => (r.json as { sandboxID: string }).sandboxID;
    const meta = { scope: 'keys' };
    const sa = idOf(await A('POST', '/v2/sandboxes', { templateID: 'base', metadata: meta }));
    const sb = idOf(await B('POST', '/v2/sandboxes', { templateID: 'base', metadata: meta }));
    // Made on the unix socket (no key): admin keys only.
    const native = (await svc.create({ template: 'base', metadata: meta })).id;
    const listed = async (call: typeof A): Promise<string[]> =>
      ((await call('GET', '/v2/sandboxes?metadata=scope%3Dkeys')).json as { sandboxID: string }[])
        .map((x) => x.sandboxID)
        .sort();
    assert.deepEqual(await listed(A), [sa]);
    assert.deepEqual(await listed(B), [sb]);
    assert.deepEqual(await listed(Admin), [sa, sb, native].sort());

    // Every route, on another key's sandbox, answers what it answers for one that never existed.
    const ghost = 'sbx-neverexisted0';
    const routes: [string, (id: string) => string, unknown][] = [
      ['GET', (id) => `/sandboxes/${id}`, undefined],
      ['POST', (id) => `/sandboxes/${id}/timeout`, { timeout: 30 }],
      ['POST', (id) => `/sandboxes/${id}/pause`, {}],
      ['POST', (id) => `/v2/sandboxes/${id}/connect`, { timeout: 30 }],
      ['GET', (id) => `/sandboxes/${id}/metrics`, undefined],
      ['POST', (id) => `/sandboxes/${id}/snapshots`, { name: 'stolen' }],
      ['POST', (id) => `/sandboxes/${id}/fork`, { count: 1 }],
      ['DELETE', (id) => `/sandboxes/${id}`, undefined],
    ];
    const shape = (r: { status: number; json: unknown }, id: string): string =>
      `${r.status} ${JSON.stringify(r.json).replaceAll(id, 'ID')}`;
    for (const [method, path, body] of routes) {
      const missing = shape(await B(method, path(ghost), body), ghost);
      assert.equal(missing, `404 {"code":404,"message":"sandbox \\"ID\\" does not exist"}`);
      assert.equal(shape(await B(method, path(sa), body), sa), missing, `${method} ${path('ID')} by B`);
      assert.equal(shape(await A(method, path(native), body), native), missing, `${method} ${path('ID')}`);
    }
    assert.equal(svc.get(sa).state, 'running', "B's attempts changed nothing");
    assert.deepEqual(
      store.listSnapshots().filter((x) => x.name === 'stolen'),
      [],
    );
    const detail = await Admin('GET', `/sandboxes/${sa}`);
    assert.equal(detail.status, 200, 'an admin key sees every sandbox');
    assert.equal((detail.json as { envdAccessToken: string }).envdAccessToken, svc.get(sa).accessToken);
    assert.equal((await Admin('GET', `/sandboxes/${native}`)).status, 200);

    // Snapshots, and what is made from them, belong to the key that makes them.
    const snap = await A('POST', `/sandboxes/${sa}/snapshots`, { name: 'a-snap' });
    assert.equal(snap.status, 201);
    const snapId = (snap.json as { snapshotID: string }).snapshotID;
    assert.equal(store.getSnapshot(snapId).ownerKeyId, keys.verify(keyA).id);
    const names = async (call: typeof A): Promise<string[]> =>
      ((await call('GET', '/snapshots')).json as { names: string[] }[]).flatMap((x) => x.names);
    assert.ok((await names(A)).includes('a-snap'));
    assert.ok(!(await names(B)).includes('a-snap'));
    assert.ok((await names(Admin)).includes('a-snap'));
    for (const ref of ['a-snap', snapId]) {
      const noTpl = shape(await B('POST', '/v2/sandboxes', { templateID: 'no-such-snap' }), 'no-such-snap');
      assert.equal(noTpl, `404 {"code":404,"message":"template or snapshot \\"ID\\" does not exist"}`);
      assert.equal(shape(await B('POST', '/v2/sandboxes', { templateID: ref }), ref), noTpl);
      const noSnap = shape(await B('DELETE', '/templates/snap-no-such-snap'), 'snap-no-such-snap');
      assert.equal(noSnap, `404 {"code":404,"message":"snapshot \\"ID\\" does not exist"}`);
      assert.equal(shape(await B('DELETE', `/templates/${ref}`), ref), noSnap);
    }
    const restored = idOf(await A('POST', '/v2/sandboxes', { templateID: 'a-snap' }));
    const forked = await A('POST', `/sandboxes/${sa}/fork`, { count: 1 });
    const clone = (forked.json as { sandbox: { sandboxID: string } }[])[0]?.sandbox.sandboxID ?? '';
    for (const id of [restored, clone]) {
      assert.equal((await A('GET', `/sandboxes/${id}`)).status, 200, 'the maker sees it');
      assert.equal((await B('GET', `/sandboxes/${id}`)).status, 404, 'another key does not');
    }
    const byAdmin = idOf(await Admin('POST', '/v2/sandboxes', { templateID: 'a-snap' }));
    assert.equal(
      (await A('GET', `/sandboxes/${byAdmin}`)).status,
      404,
      "the admin's own sandbox is the admin's",
    );
    for (const id of [byAdmin, restored, clone, sa])
      assert.equal((await Admin('DELETE', `/sandboxes/${id}`)).status, 204);
    assert.equal((await B('DELETE', `/sandboxes/${sb}`)).status, 204);
    assert.equal((await A('DELETE', '/templates/a-snap')).status, 204);
    await svc.kill(native);
  });

  it('envd proxy: a paused autoResume sandbox resumes on its next request; without autoResume it stays paused', async () => {
    const mk = async (autoResume: boolean): Promise<string> => {
      const r = await raw('POST', '/v2/sandboxes', {
        templateID: 'base',
        autoPause: true,
        autoResume: { enabled: autoResume },
      });
      return (r.json as { sandboxID: string }).sandboxID;
    };
    const health = (id: string): Promise<Response> =>
      fetch(`${sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': id } });
    const [auto, manual] = [await mk(true), await mk(false)];
    for (const id of [auto, manual]) {
      assert.equal((await health(id)).status, 204, 'the proxy knows its port');
      await svc.pause(id);
    }
    const [a, b] = await Promise.all([health(auto), health(auto)]);
    assert.deepEqual([a.status, b.status], [204, 204], 'resumed once, on a new port');
    assert.equal(svc.get(auto).state, 'running');
    assert.equal((await health(manual)).status, 502);
    assert.equal(svc.get(manual).state, 'paused');
    for (const id of [auto, manual]) await svc.kill(id);
  });

  it('bad input: E2B error bodies with the status of the catalog code; nothing is left behind', async () => {
    const before = svc.list({}, { limit: 1000 }).items.length;
    const cases: [string, string, unknown, number, RegExp][] = [
      ['POST', '/v2/sandboxes', '{"templateID": ', 400, /^body: malformed JSON/],
      ['POST', '/v2/sandboxes', {}, 400, /^templateID: is required/],
      ['POST', '/v2/sandboxes', { templateID: 'nope' }, 404, /^template or snapshot "nope" does not exist$/],
      ['POST', '/v2/sandboxes', { templateID: 'base', timeout: -1 }, 400, /^timeout: must be between/],
      ['POST', '/v2/sandboxes', { templateID: 'base', timeout: 'x' }, 400, /^timeout: must be an integer/],
      ['POST', '/v2/sandboxes', { templateID: 'base', metadata: { a: 1 } }, 400, /^metadata: value of "a"/],
      ['POST', '/v2/sandboxes', { templateID: 'base', envVars: [1] }, 400, /^envVars: must be an object/],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', autoResume: { enabled: true } },
        400,
        /^autoResume: needs autoPause/,
      ],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', network: { denyOut: ['0.0.0.0/0'] } },
        400,
        /^network: egress rules are not supported/,
      ],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', allow_internet_access: 'no' },
        400,
        /allow_internet_access/,
      ],
      ['GET', '/v2/sandboxes?state=zombie', undefined, 400, /^state: "zombie" is not a sandbox state/],
      ['GET', '/v2/sandboxes?limit=0', undefined, 400, /^limit:/],
      ['GET', '/v2/sandboxes?nextToken=abc', undefined, 400, /^cursor:/],
      ['GET', '/sandboxes/sbx-nope', undefined, 404, /^sandbox "sbx-nope" does not exist$/],
      ['GET', '/sandboxes/a..b', undefined, 400, /^sandboxId:/],
      ['DELETE', '/sandboxes/sbx-nope', undefined, 404, /does not exist/],
      ['POST', '/sandboxes/sbx-nope/timeout', {}, 400, /^timeout: is required/],
      ['GET', '/nope', undefined, 404, /^no route GET \/nope$/],
    ];
    for (const [method, path, body, status, re] of cases) {
      const r = await raw(method, path, body);
      assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.json)}`);
      const j = r.json as { code: unknown; message: unknown };
      assert.deepEqual(Object.keys(j).sort(), ['code', 'message'], `${method} ${path}`);
      assert.equal(j.code, status, `${method} ${path}`);
      assert.match(String(j.message), re, `${method} ${path}`);
    }
    assert.equal(svc.list({}, { limit: 1000 }).items.length, before, 'no sandbox was created');
    assert.deepEqual(
      (await driver.list()).filter((id) => id.startsWith('sbx-')),
      svc.list({ states: ['running'] }, { limit: 1000 }).items.map((s) => s.id),
      'no VM without a running sandbox',
    );
  });

  it('envd proxy: routes by E2b-Sandbox-Id or by URL signature; unknown, dead or unsigned get E2B error bodies', async () => {
    const sbx = await Sandbox.create('base', opts());
    const rec = svc.get(sbx.sandboxId);
    const health = await fetch(`${sandboxUrl}/health`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' },
    });
    assert.equal(health.status, 204, 'reached the (fake) guest');
    const noHeader = await fetch(`${sandboxUrl}/health`);
    assert.equal(noHeader.status, 400);
    assert.match(((await noHeader.json()) as { message: string }).message, /missing E2b-Sandbox-Id/);
    const unknown = await fetch(`${sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': 'sbx-nope' } });
    assert.equal(unknown.status, 502);
    assert.deepEqual(Object.keys((await unknown.json()) as object).sort(), ['code', 'message', 'sandboxId']);
    const port = await fetch(`${sandboxUrl}/health`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8080' },
    });
    assert.equal(port.status, 502);
    // A signed URL finds its sandbox by the token that signed it (the fake guest has no /files: 404).
    const sig = encodeURIComponent(fileSignature('/tmp/x', 'read', '', rec.accessToken, 2_000_000_000));
    const signed = await fetch(
      `${sandboxUrl}/files?path=%2Ftmp%2Fx&signature=${sig}&signature_expiration=2000000000`,
    );
    assert.equal(signed.status, 404, 'routed to the sandbox that signed it');
    const forged = await fetch(`${sandboxUrl}/files?path=%2Ftmp%2Fx&signature=v1_forged`);
    assert.equal(forged.status, 401);
    assert.deepEqual(await forged.json(), {
      code: 401,
      message: 'invalid signature: no running sandbox signed this URL',
    });
    await sbx.kill();
    const dead = await fetch(`${sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': sbx.sandboxId } });
    assert.equal(dead.status, 502, 'a killed sandbox is not reachable');
    const stale = await fetch(
      `${sandboxUrl}/files?path=%2Ftmp%2Fx&signature=${sig}&signature_expiration=2000000000`,
    );
    assert.equal(stale.status, 401, "a dead sandbox's URLs no longer route");
  });

  it('envd proxy: a sandbox marked unresponsive or stopped on a full disk is refused at once, saying why', async () => {
    const r = await raw('POST', '/v2/sandboxes', { templateID: 'base' });
    const id = (r.json as { sandboxID: string }).sandboxID;
    const health = (): Promise<Response> =>
      fetch(`${sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': id } });
    assert.equal((await health()).status, 204);
    const since = new Date().toISOString();
    guestHung = true;
    try {
      store.updateSandbox(id, {
        condition: { code: 'unresponsive', message: 'its guest agent has not answered', since },
      });
      const hung = await health();
      assert.equal(hung.status, 502);
      assert.match(
        ((await hung.json()) as { message: string }).message,
        new RegExp(`sandbox ${id} is not responding`),
      );
      store.updateSandbox(id, {
        condition: { code: 'disk_full', message: 'the host has no space left', since },
      });
      const full = await health();
      assert.equal(full.status, 507);
      assert.match(((await full.json()) as { message: string }).message, /is stopped .*no space left/);
    } finally {
      guestHung = false;
    }
    // It answers again: the mark is cleared on the next request, which goes through.
    store.updateSandbox(id, {
      condition: { code: 'unresponsive', message: 'its guest agent has not answered', since },
    });
    assert.equal((await health()).status, 204);
    assert.equal(svc.get(id).condition, null);
    await svc.kill(id);
  });
});
