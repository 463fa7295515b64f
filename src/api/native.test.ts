/**
 * The native API in-process (a loopback server around the router), over the sandbox service
 * with the fake driver: exact status codes and JSON bodies, op ids, and docs/openapi.json kept
 * in step with the routes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nullLogger } from '../core/log.ts';
import { ApiKeyService } from '../daemon/api-keys.ts';
import type { GuestClient } from '../daemon/guest-client.ts';
import { SandboxService } from '../daemon/sandbox-service.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import { FakeDriver } from '../vmm/fake-driver.ts';
import { createRouter } from './http.ts';
import { nativeRoutes } from './native.ts';
import { nativeTestRoutes } from '../../test/helpers/fake-service.ts';

const IMAGE = { key: 'img-1', kernel: '/i/k', initrd: '/i/i', rootfs: '/i/r' };
const guest: GuestClient = {
  health: () => Promise.resolve(),
  init: () => Promise.resolve(),
  exec: (cmd) =>
    Promise.resolve({
      exitCode: cmd.includes('fail') ? 4 : 0,
      stdout: '',
      stderr: '',
      status: 'exit status 0',
    }),
  metrics: () =>
    Promise.resolve({
      ts: 1,
      cpu_count: 1,
      cpu_used_pct: 0,
      mem_total: 1,
      mem_used: 1,
      mem_cache: 0,
      disk_used: 1,
      disk_total: 2,
    }),
};

describe('native API', () => {
  let dir: string;
  let store: SqliteStore;
  let server: Server;
  let base: string;
  const driver = new FakeDriver();
  let svc: SandboxService;
  /** Names the route handed to the (slow) template builder. */
  const builds: string[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-api-'));
    store = new SqliteStore(':memory:');
    svc = new SandboxService({
      store,
      driver,
      guest: () => ({
        ...guest,
        exec: async (cmd, o) => {
          o?.onStdout?.(new TextEncoder().encode(`out:${cmd}\n`));
          return guest.exec(cmd, o);
        },
      }),
      image: () => Promise.resolve(IMAGE),
      dataDir: dir,
      log: nullLogger,
    });
    await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const routes = nativeRoutes({
      svc,
      version: '9.9.9',
      buildTemplate: (n, r) => {
        builds.push(n);
        return svc.buildTemplate(n, IMAGE, r);
      },
      keys: new ApiKeyService({ store }),
      e2bEnv: () =>
        Promise.resolve({ apiUrl: 'http://127.0.0.1:1', sandboxUrl: 'http://127.0.0.1:2', apiKey: 'k' }),
    });
    server = createServer(createRouter(routes, nullLogger));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    server.closeAllConnections();
    server.close();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await r.text();
    const isJson = (r.headers.get('content-type') ?? '').startsWith('application/json');
    return {
      status: r.status,
      opId: r.headers.get('x-kiln-op-id'),
      json: isJson ? (JSON.parse(text) as Record<string, unknown>) : undefined,
      text,
    };
  };

  it('health', async () => {
    const r = await call('GET', '/v1/health');
    assert.deepEqual([r.status, r.json], [200, { ok: true, version: '9.9.9' }]);
    assert.match(r.opId ?? '', /^req-/);
  });

  it('bad input: exact error bodies with the op id, status from the code', async () => {
    const cases: [string, string, unknown, number, string, RegExp][] = [
      ['POST', '/v1/sandboxes', '{"template": ', 400, 'invalid_argument', /^body: malformed JSON/],
      ['POST', '/v1/sandboxes', '[1]', 400, 'invalid_argument', /^body: must be a JSON object$/],
      ['POST', '/v1/sandboxes', {}, 400, 'invalid_argument', /^template: is required$/],
      [
        'POST',
        '/v1/sandboxes',
        { template: 'nope' },
        404,
        'not_found',
        /^template or snapshot "nope" does not exist$/,
      ],
      [
        'POST',
        '/v1/sandboxes',
        { template: 'base', memoryMiB: 10 ** 7 },
        400,
        'invalid_argument',
        /^memoryMiB:/,
      ],
      ['POST', '/v1/sandboxes', { template: 'base', timeoutS: -1 }, 400, 'invalid_argument', /^timeout:/],
      [
        'POST',
        '/v1/sandboxes',
        { template: 'base', vcpus: 'two' },
        400,
        'invalid_argument',
        /^vcpus: must be an integer/,
      ],
      ['GET', '/v1/sandboxes/a%2Fb', undefined, 400, 'invalid_argument', /^sandboxId:/],
      ['GET', '/v1/sandboxes/a..b', undefined, 400, 'invalid_argument', /^sandboxId:/],
      ['GET', '/v1/sandboxes/sbx-nope', undefined, 404, 'not_found', /^sandbox "sbx-nope" does not exist$/],
      [
        'GET',
        '/v1/sandboxes?state=zombie',
        undefined,
        400,
        'invalid_argument',
        /^state: "zombie" is not a sandbox state$/,
      ],
      ['GET', '/v1/nope', undefined, 404, 'not_found', /^no route GET \/v1\/nope$/],
    ];
    for (const [method, path, body, status, code, re] of cases) {
      const r = await call(method, path, body, { 'x-kiln-op-id': 'op-from-client' });
      assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
      const j = r.json ?? {};
      assert.equal(j['code'], code, `${method} ${path}`);
      assert.match(String(j['message']), re, `${method} ${path}`);
      assert.equal(j['opId'], 'op-from-client');
      assert.equal(r.opId, 'op-from-client');
    }
    assert.equal((await call('GET', '/v1/health')).status, 200, 'still serving');
    assert.deepEqual(
      (await call('GET', '/v1/sandboxes')).json,
      { items: [], next: null },
      'nothing was created',
    );
  });

  it('exec: envs, timeoutMs, user and cwd are checked (400 naming the field) before the sandbox is', async () => {
    const c = await call('POST', '/v1/sandboxes', { template: 'base' });
    const id = String(c.json?.['sandboxId']);
    const cases: [Record<string, unknown>, string][] = [
      [{ envs: 'x' }, 'envs: must be an object of strings, got "x"'],
      [{ envs: [1, 2] }, 'envs: must be an object of strings, got [1,2]'],
      [{ envs: null }, 'envs: must be an object of strings, got null'],
      [{ envs: { a: 1 } }, 'envs: value of "a" must be a string, got 1'],
      [{ timeoutMs: -1 }, 'timeoutMs: must be between 0 and 86400000, got -1'],
      [{ timeoutMs: 1.5 }, 'timeoutMs: must be an integer, got 1.5'],
      [{ timeoutMs: '10' }, 'timeoutMs: must be an integer, got "10"'],
      [{ user: 7 }, 'user: must be a string, got 7'],
      [{ cwd: {} }, 'cwd: must be a string, got {}'],
    ];
    for (const [extra, message] of cases) {
      for (const target of [id, 'sbx-nope']) {
        const r = await call('POST', `/v1/sandboxes/${target}/exec`, { cmd: 'true', ...extra });
        assert.deepEqual(
          [r.status, r.json?.['code'], r.json?.['message']],
          [400, 'invalid_argument', message],
          `${JSON.stringify(extra)} on ${target}`,
        );
      }
    }
    const ok = await call('POST', `/v1/sandboxes/${id}/exec`, {
      cmd: 'true',
      envs: { A: 'b' },
      timeoutMs: 0,
    });
    assert.equal(ok.status, 200);
    assert.match(ok.text, /"exit":\{"exitCode":0/);
    await call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('template build: the name, memory and vcpus are refused before the builder runs', async () => {
    const n0 = builds.length;
    for (const [body, message] of [
      [{ name: 'Bad/Name' }, 'name: "Bad/Name" must not contain "/", "\\", ".." or NUL'],
      [{ name: 'UPPER' }, 'name: "UPPER" must be lower-case letters, digits, "-", "_" and single dots'],
      [{ name: '' }, 'name: must be a non-empty string'],
      [{ name: 'ok', memoryMiB: 1 }, 'memoryMiB: must be between 128 and 65536, got 1'],
      [{ name: 'ok', vcpus: 0 }, 'vcpus: must be between 1 and 32, got 0'],
    ] as const) {
      const r = await call('POST', '/v1/templates', body);
      assert.deepEqual([r.status, r.json?.['code'], r.json?.['message']], [400, 'invalid_argument', message]);
    }
    assert.deepEqual(builds.slice(n0), [], 'the builder (an image cache check first, seconds) never ran');
  });

  it('create, get, list with filters, timeout, exec stream, kill, and kill again', async () => {
    const c = await call('POST', '/v1/sandboxes', {
      template: 'base',
      metadata: { team: 'a' },
      timeoutS: 60,
    });
    assert.equal(c.status, 201);
    const id = String(c.json?.['sandboxId']);
    assert.deepEqual(Object.keys(c.json ?? {}).sort(), [
      'condition', 'createdAt', 'endAt', 'endReason', 'envdAccessToken', 'memoryMiB', 'metadata', 'ownerKeyId', 'sandboxId', 'startedAt', 'state', 'templateId', 'vcpus',
    ]); // prettier-ignore
    assert.equal(c.json?.['ownerKeyId'], null, 'made on the socket: no key owns it');
    assert.equal(c.json['state'], 'running');
    assert.deepEqual((await call('GET', `/v1/sandboxes/${id}`)).json, c.json);
    assert.deepEqual(
      ((await call('GET', '/v1/sandboxes?metadata.team=a&state=running')).json?.['items'] as unknown[])
        .length,
      1,
    );
    assert.deepEqual(
      ((await call('GET', '/v1/sandboxes?metadata.team=b')).json?.['items'] as unknown[]).length,
      0,
    );
    const t = await call('POST', `/v1/sandboxes/${id}/timeout`, { timeoutS: 3600 });
    assert.ok(Date.parse(String(t.json?.['endAt'])) > Date.now() + 3500_000);
    const ex = await call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 'echo hi' });
    assert.equal(ex.status, 200);
    assert.deepEqual(
      ex.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
      [
        { stdout: Buffer.from('out:echo hi\n').toString('base64') },
        { exit: { exitCode: 0, status: 'exit status 0' } },
      ],
    );
    assert.equal((await call('POST', `/v1/sandboxes/${id}/exec`, {})).status, 400);
    const kills = await Promise.all([
      call('DELETE', `/v1/sandboxes/${id}`),
      call('DELETE', `/v1/sandboxes/${id}`),
    ]);
    assert.deepEqual(kills.map((k) => k.status).sort(), [204, 409]);
    const again = await call('DELETE', `/v1/sandboxes/${id}`);
    assert.deepEqual([again.status, again.json?.['code']], [409, 'invalid_state']);
    assert.equal((await call('GET', `/v1/sandboxes/${id}`)).json?.['state'], 'dead');
    const logs = await call('GET', `/v1/sandboxes/${id}/logs`);
    assert.deepEqual(
      (logs.json?.['items'] as { message: string }[]).map((e) => e.message),
      ['sandbox created', 'sandbox ended: killed'],
    );
  });

  it('API keys: created with the key shown once, listed by prefix only, revoked', async () => {
    const c = await call('POST', '/v1/api-keys', { name: 'ci' });
    assert.equal(c.status, 201);
    const cj = c.json ?? {};
    const key = String(cj['key']);
    assert.match(key, /^e2b_[0-9a-f]{40}$/);
    assert.deepEqual(Object.keys(c.json ?? {}).sort(), [
      'admin',
      'createdAt',
      'id',
      'key',
      'lastUsedAt',
      'name',
      'prefix',
    ]);
    assert.equal(cj['admin'], false);
    assert.equal(cj['prefix'], key.slice(0, 10));
    const list = await call('GET', '/v1/api-keys');
    const items = list.json?.['items'] as Record<string, unknown>[];
    assert.deepEqual(
      items.map((k) => [k['id'], k['name'], k['key']]),
      [[cj['id'], 'ci', undefined]],
      'the key itself is never listed',
    );
    const adm = await call('POST', '/v1/api-keys', { name: 'ops', admin: true });
    assert.deepEqual([adm.status, adm.json?.['admin']], [201, true]);
    assert.deepEqual(
      ((await call('GET', '/v1/api-keys')).json?.['items'] as Record<string, unknown>[]).map((k) => [
        k['name'],
        k['admin'],
      ]),
      [
        ['ci', false],
        ['ops', true],
      ],
    );
    const notBool = await call('POST', '/v1/api-keys', { name: 'x', admin: 'yes' });
    assert.deepEqual([notBool.status, notBool.json?.['code']], [400, 'invalid_argument']);
    assert.equal((await call('DELETE', `/v1/api-keys/${String(adm.json?.['id'])}`)).status, 204);
    assert.ok(!list.text.includes(key));
    const bad = await call('POST', '/v1/api-keys', { name: 'Bad Name' });
    assert.deepEqual([bad.status, bad.json?.['code']], [400, 'invalid_argument']);
    assert.equal((await call('DELETE', `/v1/api-keys/${String(cj['id'])}`)).status, 204);
    const again = await call('DELETE', `/v1/api-keys/${String(cj['id'])}`);
    assert.deepEqual([again.status, again.json?.['code']], [404, 'not_found']);
    assert.deepEqual((await call('GET', '/v1/api-keys')).json, { items: [] });
    const env = await call('POST', '/v1/e2b/env');
    assert.deepEqual(env.json, {
      apiUrl: 'http://127.0.0.1:1',
      sandboxUrl: 'http://127.0.0.1:2',
      apiKey: 'k',
    });
  });

  it('snapshots, pause/resume, fork and restore: status codes and shapes', async () => {
    const created = await call('POST', '/v1/sandboxes', { template: 'base' });
    const id = String(created.json?.['sandboxId']);
    const snap = await call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'mine' });
    assert.equal(snap.status, 201, snap.text);
    const sj = snap.json ?? {};
    assert.equal(sj['name'], 'mine');
    assert.equal(sj['kind'], 'snapshot');
    assert.equal(sj['sandboxId'], id);
    assert.equal('guestToken' in sj, false, 'the guest token stays private');
    const sid = String(sj['snapshotId']);
    assert.equal((await call('GET', '/v1/snapshots/mine')).json?.['snapshotId'], sid);
    const listed = await call('GET', '/v1/snapshots?kind=snapshot');
    assert.deepEqual(
      (listed.json?.['items'] as { snapshotId: string }[]).map((x) => x.snapshotId),
      [sid],
    );
    const restored = await call('POST', `/v1/snapshots/mine/restore`, { metadata: { a: 'b' } });
    assert.equal(restored.status, 201, restored.text);
    assert.deepEqual(restored.json?.['metadata'], { a: 'b' });
    const forked = await call('POST', `/v1/sandboxes/${id}/fork`, { count: 2 });
    assert.equal(forked.status, 201, forked.text);
    assert.equal((forked.json?.['results'] as unknown[]).length, 2);
    const paused = await call('POST', `/v1/sandboxes/${id}/pause`);
    assert.deepEqual([paused.status, paused.json?.['state']], [200, 'paused']);
    const again = await call('POST', `/v1/sandboxes/${id}/pause`);
    assert.deepEqual([again.status, again.json?.['code']], [409, 'invalid_state']);
    const resumed = await call('POST', `/v1/sandboxes/${id}/resume`, { timeoutS: 60 });
    assert.deepEqual([resumed.status, resumed.json?.['state']], [200, 'running']);
    // Deleted while its source and a restore stand on its layer: gone for users at once.
    assert.equal((await call('DELETE', `/v1/snapshots/${sid}`)).status, 204);
    for (const [method, path] of [
      ['GET', `/v1/snapshots/${sid}`],
      ['GET', '/v1/snapshots/mine'],
      ['POST', `/v1/snapshots/${sid}/restore`],
      ['GET', `/v1/snapshots/${sid}/export`],
      ['DELETE', `/v1/snapshots/${sid}`],
    ] as const) {
      const r = await call(method, path, method === 'POST' ? {} : undefined);
      assert.deepEqual([r.status, r.json?.['code']], [404, 'not_found'], `${method} ${path}: ${r.text}`);
    }
    assert.deepEqual((await call('GET', '/v1/snapshots?kind=snapshot')).json?.['items'], []);
    const renamed = await call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'mine' });
    assert.equal(renamed.status, 201, 'the name is free at once');
    for (const [method, path, body, status, code] of [
      ['GET', '/v1/snapshots/nope', undefined, 404, 'not_found'],
      ['GET', '/v1/snapshots?kind=weird', undefined, 400, 'invalid_argument'],
      ['POST', '/v1/snapshots/nope/restore', {}, 404, 'not_found'],
      ['POST', `/v1/sandboxes/${id}/snapshots`, { name: 'mine' }, 409, 'already_exists'],
      ['POST', `/v1/sandboxes/${id}/fork`, { count: 99 }, 400, 'invalid_argument'],
      ['POST', '/v1/sandboxes/nope/pause', undefined, 404, 'not_found'],
      ['POST', '/v1/snapshots/import', 'not a tar', 400, 'invalid_argument'],
    ] as const) {
      const r = await call(method, path, body);
      assert.deepEqual([r.status, r.json?.['code']], [status, code], `${method} ${path}: ${r.text}`);
    }
  });

  it('docs/openapi.json documents exactly the routes the server has', () => {
    const doc = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    const routes = nativeTestRoutes(svc, store).map(
      (r) => `${r.method} ${r.path.replace(/:([a-zA-Z]+)/g, '{$1}')}`,
    );
    assert.deepEqual(documented.sort(), routes.sort());
  });
});
