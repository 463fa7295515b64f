/**
 * The native API in-process (a loopback server around the router), over the sandbox service
 * with the fake driver: exact status codes and JSON bodies, op ids, and docs/openapi.json kept
 * in step with the routes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ApiKeyService } from '../daemon/api-keys.ts';
import { nativeRoutes } from './native.ts';
import { NativeHarness } from './testing/harness.ts';

describe('native API', () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start({ base: true, version: '9.9.9' })));
  after(() => h.close());

  it('health', async () => {
    const r = await h.call('GET', '/v1/health');
    assert.deepEqual([r.status, r.json], [200, { ok: true, version: '9.9.9' }]);
    assert.match(r.opId ?? '', /^req-/);
  });

  it('warm pool: size a template, read it back, reset it; bad bodies refused', async () => {
    const tpl = h.svc.templates().find((t) => t.name === 'base');
    assert.ok(tpl);
    const view = (size: number, sizeSet: boolean) => ({
      templateId: tpl.id,
      template: 'base',
      size,
      sizeSet,
      ready: 0,
      starting: 0,
    });
    const put = await h.call('PUT', '/v1/templates/base/warm-pool', { size: 2 });
    assert.deepEqual([put.status, put.json], [200, view(2, true)]);
    assert.deepEqual((await h.call('GET', `/v1/templates/${tpl.id}/warm-pool`)).json, view(2, true));
    assert.deepEqual((await h.call('GET', '/v1/warm-pool')).json, { items: [view(2, true)] });
    const reset = await h.call('PUT', '/v1/templates/base/warm-pool', { reset: true });
    assert.deepEqual([reset.status, reset.json], [200, view(0, false)]);
    assert.deepEqual((await h.call('GET', '/v1/warm-pool')).json, { items: [] });
    for (const [body, status, code] of [
      [{}, 400, 'invalid_argument'],
      [{ size: 1, reset: true }, 400, 'invalid_argument'],
      [{ size: 65 }, 400, 'invalid_argument'],
      [{ size: 'two' }, 400, 'invalid_argument'],
    ] as const) {
      const r = await h.call('PUT', '/v1/templates/base/warm-pool', body);
      assert.deepEqual([r.status, (r.json as { code: string }).code], [status, code], JSON.stringify(body));
    }
    const missing = await h.call('PUT', '/v1/templates/nope/warm-pool', { size: 1 });
    assert.equal(missing.status, 404);
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
      const r = await h.call(method, path, body, { 'x-kiln-op-id': 'op-from-client' });
      assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
      const j = r.json ?? {};
      assert.equal(j['code'], code, `${method} ${path}`);
      assert.match(String(j['message']), re, `${method} ${path}`);
      assert.equal(j['opId'], 'op-from-client');
      assert.equal(r.opId, 'op-from-client');
    }
    assert.equal((await h.call('GET', '/v1/health')).status, 200, 'still serving');
    assert.deepEqual(
      (await h.call('GET', '/v1/sandboxes')).json,
      { items: [], next: null },
      'nothing was created',
    );
  });

  it('exec: envs, timeoutMs, user and cwd are checked (400 naming the field) before the sandbox is', async () => {
    const c = await h.call('POST', '/v1/sandboxes', { template: 'base' });
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
        const r = await h.call('POST', `/v1/sandboxes/${target}/exec`, { cmd: 'true', ...extra });
        assert.deepEqual(
          [r.status, r.json?.['code'], r.json?.['message']],
          [400, 'invalid_argument', message],
          `${JSON.stringify(extra)} on ${target}`,
        );
      }
    }
    const ok = await h.call('POST', `/v1/sandboxes/${id}/exec`, {
      cmd: 'true',
      envs: { A: 'b' },
      timeoutMs: 0,
    });
    assert.equal(ok.status, 200);
    assert.match(ok.text, /"exit":\{"exitCode":0/);
    await h.call('DELETE', `/v1/sandboxes/${id}`);
  });

  it('template build: the name, memory and vcpus are refused before the builder runs', async () => {
    const n0 = h.builds.length;
    for (const [body, message] of [
      [{ name: 'Bad/Name' }, 'name: "Bad/Name" must not contain "/", "\\", ".." or NUL'],
      [{ name: 'UPPER' }, 'name: "UPPER" must be lower-case letters, digits, "-", "_" and single dots'],
      [{ name: '' }, 'name: must be a non-empty string'],
      [{ name: 'ok', memoryMiB: 1 }, 'memoryMiB: must be between 128 and 65536, got 1'],
      [{ name: 'ok', vcpus: 0 }, 'vcpus: must be between 1 and 32, got 0'],
    ] as const) {
      const r = await h.call('POST', '/v1/templates', body);
      assert.deepEqual([r.status, r.json?.['code'], r.json?.['message']], [400, 'invalid_argument', message]);
    }
    assert.deepEqual(h.builds.slice(n0), [], 'the builder (an image cache check first, seconds) never ran');
  });

  it('create, get, list with filters, timeout, exec stream, kill, and kill again', async () => {
    const c = await h.call('POST', '/v1/sandboxes', {
      template: 'base',
      metadata: { team: 'a' },
      timeoutS: 60,
    });
    assert.equal(c.status, 201);
    const id = String(c.json?.['sandboxId']);
    assert.deepEqual(Object.keys(c.json ?? {}).sort(), [
      'condition', 'createdAt', 'endAt', 'endReason', 'envdAccessToken', 'memoryMiB', 'metadata', 'network', 'ownerKeyId', 'sandboxId', 'startedAt', 'state', 'templateId', 'trafficAccessToken', 'vcpus',
    ]); // prettier-ignore
    assert.equal(c.json?.['ownerKeyId'], null, 'made on the socket: no key owns it');
    assert.equal(c.json['state'], 'running');
    assert.deepEqual((await h.call('GET', `/v1/sandboxes/${id}`)).json, c.json);
    assert.deepEqual(
      ((await h.call('GET', '/v1/sandboxes?metadata.team=a&state=running')).json?.['items'] as unknown[])
        .length,
      1,
    );
    assert.deepEqual(
      ((await h.call('GET', '/v1/sandboxes?metadata.team=b')).json?.['items'] as unknown[]).length,
      0,
    );
    const t = await h.call('POST', `/v1/sandboxes/${id}/timeout`, { timeoutS: 3600 });
    assert.ok(Date.parse(String(t.json?.['endAt'])) > Date.now() + 3500_000);
    const ex = await h.call('POST', `/v1/sandboxes/${id}/exec`, { cmd: 'echo hi' });
    assert.equal(ex.status, 200);
    assert.deepEqual(
      ex.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
      [
        { stdout: Buffer.from('ran echo hi\n').toString('base64') },
        { exit: { exitCode: 0, status: 'exit status 0' } },
      ],
    );
    assert.equal((await h.call('POST', `/v1/sandboxes/${id}/exec`, {})).status, 400);
    const kills = await Promise.all([
      h.call('DELETE', `/v1/sandboxes/${id}`),
      h.call('DELETE', `/v1/sandboxes/${id}`),
    ]);
    assert.deepEqual(kills.map((k) => k.status).sort(), [204, 409]);
    const again = await h.call('DELETE', `/v1/sandboxes/${id}`);
    assert.deepEqual([again.status, again.json?.['code']], [409, 'invalid_state']);
    assert.equal((await h.call('GET', `/v1/sandboxes/${id}`)).json?.['state'], 'dead');
    const logs = await h.call('GET', `/v1/sandboxes/${id}/logs`);
    assert.deepEqual(
      (logs.json?.['items'] as { message: string }[]).map((e) => e.message),
      ['sandbox created', 'sandbox ended: killed'],
    );
  });

  it('API keys: created with the key shown once, listed by prefix only, revoked', async () => {
    const c = await h.call('POST', '/v1/api-keys', { name: 'ci' });
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
    const list = await h.call('GET', '/v1/api-keys');
    const items = list.json?.['items'] as Record<string, unknown>[];
    assert.deepEqual(
      items.map((k) => [k['id'], k['name'], k['key']]),
      [[cj['id'], 'ci', undefined]],
      'the key itself is never listed',
    );
    const adm = await h.call('POST', '/v1/api-keys', { name: 'ops', admin: true });
    assert.deepEqual([adm.status, adm.json?.['admin']], [201, true]);
    assert.deepEqual(
      ((await h.call('GET', '/v1/api-keys')).json?.['items'] as Record<string, unknown>[]).map((k) => [
        k['name'],
        k['admin'],
      ]),
      [
        ['ci', false],
        ['ops', true],
      ],
    );
    const notBool = await h.call('POST', '/v1/api-keys', { name: 'x', admin: 'yes' });
    assert.deepEqual([notBool.status, notBool.json?.['code']], [400, 'invalid_argument']);
    assert.equal((await h.call('DELETE', `/v1/api-keys/${String(adm.json?.['id'])}`)).status, 204);
    assert.ok(!list.text.includes(key));
    const bad = await h.call('POST', '/v1/api-keys', { name: 'Bad Name' });
    assert.deepEqual([bad.status, bad.json?.['code']], [400, 'invalid_argument']);
    assert.equal((await h.call('DELETE', `/v1/api-keys/${String(cj['id'])}`)).status, 204);
    const again = await h.call('DELETE', `/v1/api-keys/${String(cj['id'])}`);
    assert.deepEqual([again.status, again.json?.['code']], [404, 'not_found']);
    assert.deepEqual((await h.call('GET', '/v1/api-keys')).json, { items: [] });
    const env = await h.call('POST', '/v1/e2b/env');
    assert.deepEqual(env.json, {
      apiUrl: 'http://127.0.0.1:1',
      sandboxUrl: 'http://127.0.0.1:2',
      apiKey: 'k',
    });
  });

  it('snapshots, pause/resume, fork and restore: status codes and shapes', async () => {
    const created = await h.call('POST', '/v1/sandboxes', { template: 'base' });
    const id = String(created.json?.['sandboxId']);
    const snap = await h.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'mine' });
    assert.equal(snap.status, 201, snap.text);
    const sj = snap.json ?? {};
    assert.equal(sj['name'], 'mine');
    assert.equal(sj['kind'], 'snapshot');
    assert.equal(sj['sandboxId'], id);
    assert.equal('guestToken' in sj, false, 'the guest token stays private');
    const sid = String(sj['snapshotId']);
    assert.equal((await h.call('GET', '/v1/snapshots/mine')).json?.['snapshotId'], sid);
    const listed = await h.call('GET', '/v1/snapshots?kind=snapshot');
    assert.deepEqual(
      (listed.json?.['items'] as { snapshotId: string }[]).map((x) => x.snapshotId),
      [sid],
    );
    const restored = await h.call('POST', `/v1/snapshots/mine/restore`, { metadata: { a: 'b' } });
    assert.equal(restored.status, 201, restored.text);
    assert.deepEqual(restored.json?.['metadata'], { a: 'b' });
    const forked = await h.call('POST', `/v1/sandboxes/${id}/fork`, { count: 2 });
    assert.equal(forked.status, 201, forked.text);
    assert.equal((forked.json?.['results'] as unknown[]).length, 2);
    const paused = await h.call('POST', `/v1/sandboxes/${id}/pause`);
    assert.deepEqual([paused.status, paused.json?.['state']], [200, 'paused']);
    const again = await h.call('POST', `/v1/sandboxes/${id}/pause`);
    assert.deepEqual([again.status, again.json?.['code']], [409, 'invalid_state']);
    const resumed = await h.call('POST', `/v1/sandboxes/${id}/resume`, { timeoutS: 60 });
    assert.deepEqual([resumed.status, resumed.json?.['state']], [200, 'running']);
    assert.equal((await h.call('POST', `/v1/sandboxes/${id}/pause`)).status, 200);
    const badMemory = await h.call('POST', `/v1/sandboxes/${id}/resume`, { memory: 1 });
    assert.deepEqual(
      [badMemory.status, badMemory.json?.['message']],
      [400, 'memory: must be true or false, got 1'],
    );
    const rebooted = await h.call('POST', `/v1/sandboxes/${id}/resume`, { memory: false });
    assert.deepEqual([rebooted.status, rebooted.json?.['state']], [200, 'running']);
    const ev = h.store.listEvents(id).items.at(-1)?.data;
    assert.deepEqual(
      [ev?.['rebooted'], ev?.['memoryIgnored']],
      [true, true],
      'a cold boot of the memory pause',
    );
    // Deleted while its source and a restore stand on its layer: gone for users at once.
    assert.equal((await h.call('DELETE', `/v1/snapshots/${sid}`)).status, 204);
    for (const [method, path] of [
      ['GET', `/v1/snapshots/${sid}`],
      ['GET', '/v1/snapshots/mine'],
      ['POST', `/v1/snapshots/${sid}/restore`],
      ['GET', `/v1/snapshots/${sid}/export`],
      ['DELETE', `/v1/snapshots/${sid}`],
    ] as const) {
      const r = await h.call(method, path, method === 'POST' ? {} : undefined);
      assert.deepEqual([r.status, r.json?.['code']], [404, 'not_found'], `${method} ${path}: ${r.text}`);
    }
    assert.deepEqual((await h.call('GET', '/v1/snapshots?kind=snapshot')).json?.['items'], []);
    const renamed = await h.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'mine' });
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
      const r = await h.call(method, path, body);
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
    const routes = nativeRoutes({
      svc: h.svc,
      version: '',
      buildTemplate: () => Promise.reject(new Error('unused')),
      keys: new ApiKeyService({ store: h.store }),
      e2bEnv: () => Promise.reject(new Error('unused')),
    }).map((r) => `${r.method} ${r.path.replace(/:([a-zA-Z]+)/g, '{$1}')}`);
    assert.deepEqual(documented.sort(), routes.sort());
  });
});
