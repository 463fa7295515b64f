/**
 * E2B's routes beyond the v2 core, over the fake-driver service: the v1 create/connect/list that
 * older SDKs call (driven by e2b@2.7.0 and e2b@2.45.0 themselves), resume, refreshes, list order
 * and filters, the metrics range and batch, logs, health, teams, API keys, template aliases, the
 * refused cloud routes, and the route table the README prints.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Sandbox, Template } from 'e2b';
import { Sandbox as Sandbox27 } from 'e2b-2.7';
import { Sandbox as Sandbox245, Template as Template245 } from 'e2b-2.45';
import { E2B_REFUSED, E2B_SERVED, e2bRoutes } from '../e2b.ts';
import { E2bHarness } from '../testing/harness.ts';

/** What these checks call of an SDK's Sandbox (the releases' own types do not unify). */
interface SbxLike {
  sandboxId: string;
  setTimeout(ms: number): Promise<void>;
  getMetrics(): Promise<unknown[]>;
  /** e2b@2.7.0 names it `betaPause`, and it forgets the sandbox's connection options: given again. */
  pause?: (opts: object) => Promise<boolean>;
  betaPause?: (opts: object) => Promise<boolean>;
  getInfo(): Promise<{ state: string }>;
}
interface SdkLike {
  create(template: string, opts: object): Promise<SbxLike>;
  connect(id: string, opts: object): Promise<SbxLike>;
  getInfo(id: string, opts: object): Promise<{ sandboxId: string; state: string; metadata: object }>;
  list(opts: object): { nextItems(): Promise<{ sandboxId: string }[]> };
  kill(id: string, opts: object): Promise<boolean>;
}

const ids = (xs: { sandboxId: string }[]): string[] => xs.map((x) => x.sandboxId);

describe('E2B API: v1 routes, list order, metrics, logs, account routes, route table (fake driver, real SDKs)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  for (const [name, S] of [
    ['e2b@2.7.0', Sandbox27 as unknown as SdkLike],
    ['e2b@2.45.0', Sandbox245 as unknown as SdkLike],
  ] as const)
    it(`${name} (POST /sandboxes, POST /sandboxes/:id/connect): create, getInfo, list, setTimeout, getMetrics, pause, connect, kill`, async () => {
      const sbx = await S.create('base', { ...h.opts(), metadata: { sdk: name } });
      const info = await S.getInfo(sbx.sandboxId, h.opts());
      assert.deepEqual(
        [info.sandboxId, info.state, info.metadata],
        [sbx.sandboxId, 'running', { sdk: name }],
      );
      const listed = await S.list({ ...h.opts(), query: { metadata: { sdk: name } } }).nextItems();
      assert.deepEqual(ids(listed), [sbx.sandboxId]);
      await sbx.setTimeout(600_000);
      assert.equal((await sbx.getMetrics()).length, 1);
      assert.equal(await (sbx.pause ?? sbx.betaPause)?.call(sbx, h.opts()), true);
      const again = await S.connect(sbx.sandboxId, h.opts());
      assert.equal(again.sandboxId, sbx.sandboxId);
      assert.equal((await again.getInfo()).state, 'running', 'v1 connect resumed it');
      assert.equal(await S.kill(sbx.sandboxId, h.opts()), true);
    });

  it('POST /sandboxes and /sandboxes/:id/connect answer the v2 shapes; GET /sandboxes lists running ones only, newest first', async () => {
    const v1 = await h.raw('POST', '/sandboxes', { templateID: 'base', metadata: { v: '1' } });
    const v2 = await h.raw('POST', '/v2/sandboxes', { templateID: 'base', metadata: { v: '1' } });
    assert.deepEqual([v1.status, v2.status], [201, 201]);
    assert.deepEqual(Object.keys(v1.json as object).sort(), Object.keys(v2.json as object).sort());
    const [a, b] = [v1, v2].map((r) => (r.json as { sandboxID: string }).sandboxID) as [string, string];
    const c = await h.raw('POST', `/sandboxes/${a}/connect`, { timeout: 60 });
    assert.equal(c.status, 200);
    assert.equal((c.json as { sandboxID: string }).sandboxID, a);
    assert.equal((await h.raw('POST', `/sandboxes/${b}/pause`, {})).status, 204);
    const l = await h.raw('GET', '/sandboxes?metadata=v%3D1');
    assert.deepEqual(
      (l.json as { sandboxID: string; state: string }[]).map((x) => [x.sandboxID, x.state]),
      [[a, 'running']],
    );
    for (const x of [a, b]) assert.equal((await h.raw('DELETE', `/sandboxes/${x}`)).status, 204);
  });

  it('list: newest first by default, order asc, startedAfter and the template filter (id or name)', async () => {
    const made = [];
    for (let i = 0; i < 3; i++)
      made.push(await Sandbox.create('base', { ...h.opts(), metadata: { ord: 'o' } }));
    const q = { metadata: { ord: 'o' } };
    assert.deepEqual(ids(await Sandbox.list({ ...h.opts(), query: q }).nextItems()), ids(made).reverse());
    assert.deepEqual(ids(await Sandbox.list({ ...h.opts(), query: q, order: 'asc' }).nextItems()), ids(made));
    const future = new Date(Date.now() + 3600_000);
    assert.deepEqual(
      await Sandbox.list({ ...h.opts(), query: { ...q, startedAfter: future } }).nextItems(),
      [],
    );
    const past = new Date(Date.now() - 3600_000);
    assert.equal(
      (await Sandbox.list({ ...h.opts(), query: { ...q, startedAfter: past } }).nextItems()).length,
      3,
    );
    const tid = h.svc.get(made[0]?.sandboxId ?? '').templateId;
    for (const template of ['base', tid])
      assert.equal((await Sandbox.list({ ...h.opts(), query: { ...q, template } }).nextItems()).length, 3);
    assert.deepEqual(await Sandbox.list({ ...h.opts(), query: { ...q, template: 'other' } }).nextItems(), []);
    assert.equal((await h.raw('GET', '/v2/sandboxes?order=sideways')).status, 400);
    assert.equal((await h.raw('GET', '/v2/sandboxes?startedAfter=yesterday')).status, 400);
    for (const s of made) await s.kill();
  });

  it('getMetrics({start, end}) answers the sample only inside the range; GET /sandboxes/metrics batches', async () => {
    const sbx = await Sandbox.create('base', h.opts());
    const at = new Date(1_700_000_000_000); // the fake guest's sample time
    assert.equal((await sbx.getMetrics()).length, 1);
    assert.deepEqual(
      await sbx.getMetrics({ start: new Date(at.getTime() - 60_000), end: new Date(at.getTime() - 1000) }),
      [],
    );
    assert.deepEqual(await sbx.getMetrics({ start: new Date(at.getTime() + 1000) }), []);
    assert.equal((await sbx.getMetrics({ start: new Date(at.getTime() - 1000), end: at })).length, 1);
    assert.equal((await h.raw('GET', `/sandboxes/${sbx.sandboxId}/metrics?start=5&end=4`)).status, 400);
    const batch = await h.raw('GET', `/sandboxes/metrics?sandbox_ids=${sbx.sandboxId},sbx-nope`);
    assert.equal(batch.status, 200);
    const got = (batch.json as { sandboxes: Record<string, { timestampUnix: number }> }).sandboxes;
    assert.deepEqual(Object.keys(got), [sbx.sandboxId]);
    assert.equal(got[sbx.sandboxId]?.timestampUnix, 1_700_000_000);
    assert.equal((await h.raw('GET', '/sandboxes/metrics')).status, 400);
    await sbx.kill();
  });

  it('POST /sandboxes/:id/resume (201 Sandbox; 409 when running) and /refreshes (extends, never shortens)', async () => {
    const id = (
      (await h.raw('POST', '/v2/sandboxes', { templateID: 'base', timeout: 600 })).json as {
        sandboxID: string;
      }
    ).sandboxID;
    const running = await h.raw('POST', `/sandboxes/${id}/resume`, {});
    assert.deepEqual(
      [running.status, running.json],
      [409, { code: 409, message: `sandbox ${id} is already running` }],
    );
    const endAt = (): number => Date.parse(h.svc.get(id).endAt);
    const before = endAt();
    assert.equal((await h.raw('POST', `/sandboxes/${id}/refreshes`, { duration: 60 })).status, 204);
    assert.equal(endAt(), before, 'a shorter refresh leaves the end time');
    assert.equal((await h.raw('POST', `/sandboxes/${id}/refreshes`, { duration: 3600 })).status, 204);
    assert.ok(endAt() > Date.now() + 3500_000);
    assert.equal((await h.raw('POST', `/sandboxes/${id}/refreshes`, { duration: 3601 })).status, 400);
    assert.equal((await h.raw('POST', `/sandboxes/${id}/pause`, {})).status, 204);
    const resumed = await h.raw('POST', `/sandboxes/${id}/resume`, { timeout: 120 });
    assert.equal(resumed.status, 201);
    assert.equal((resumed.json as { sandboxID: string }).sandboxID, id);
    assert.equal(h.svc.get(id).state, 'running');
    assert.ok(Math.abs(endAt() - Date.now() - 120_000) < 5000, 'timeout honoured');
    assert.equal((await h.raw('POST', '/sandboxes/sbx-nope/resume', {})).status, 404);
    assert.equal((await h.raw('POST', '/sandboxes/sbx-nope/refreshes', {})).status, 404);
    assert.equal((await h.raw('DELETE', `/sandboxes/${id}`)).status, 204);
  });

  it('logs v1 and v2 from the sandbox events: shapes, start/cursor, direction, level, search; readable after the end', async () => {
    const id = ((await h.raw('POST', '/v2/sandboxes', { templateID: 'base' })).json as { sandboxID: string })
      .sandboxID;
    assert.equal((await h.raw('POST', `/sandboxes/${id}/pause`, {})).status, 204);
    assert.equal((await h.raw('DELETE', `/sandboxes/${id}`)).status, 204);
    const v1 = (await h.raw('GET', `/sandboxes/${id}/logs`)).json as {
      logs: { timestamp: string; line: string }[];
      logEntries: { timestamp: string; level: string; message: string; fields: Record<string, string> }[];
    };
    const messages = v1.logEntries.map((e) => e.message);
    assert.equal(messages[0], 'sandbox created');
    assert.equal(messages.at(-1), 'sandbox ended: killed');
    assert.deepEqual(
      v1.logs.map((l) => l.line),
      messages,
    );
    for (const e of v1.logEntries) {
      assert.deepEqual(Object.keys(e).sort(), ['fields', 'level', 'message', 'timestamp']);
      assert.ok(Object.values(e.fields).every((v) => typeof v === 'string'));
    }
    assert.equal(
      ((await h.raw('GET', `/sandboxes/${id}/logs?limit=1`)).json as { logs: unknown[] }).logs.length,
      1,
    );
    const future = Date.now() + 3600_000;
    assert.deepEqual((await h.raw('GET', `/sandboxes/${id}/logs?start=${future}`)).json, {
      logs: [],
      logEntries: [],
    });
    type V2 = { logs: { message: string; level: string }[] };
    const v2 = async (q: string): Promise<string[]> =>
      ((await h.raw('GET', `/v2/sandboxes/${id}/logs${q}`)).json as V2).logs.map((e) => e.message);
    assert.deepEqual(await v2(''), messages);
    assert.deepEqual(await v2(`?direction=backward&cursor=${future}`), [...messages].reverse());
    assert.deepEqual(await v2(`?cursor=${future}`), []);
    assert.deepEqual(await v2('?search=ended'), ['sandbox ended: killed']);
    assert.deepEqual(await v2('?level=error'), []);
    assert.deepEqual(await v2('?limit=2'), messages.slice(0, 2));
    assert.equal((await h.raw('GET', `/v2/sandboxes/${id}/logs?level=loud`)).status, 400);
    assert.equal((await h.raw('GET', '/v2/sandboxes/sbx-nope/logs')).status, 404);
    const other = h.keys.create('logs-other').key;
    assert.equal(
      (await h.raw('GET', `/sandboxes/${id}/logs`, undefined, other)).status,
      404,
      "another key's",
    );
  });

  it('GET /health, GET /teams (one team), API keys for an admin key only, Template.exists for kiln templates', async () => {
    assert.equal((await h.raw('GET', '/health')).status, 204);
    assert.deepEqual((await h.raw('GET', '/teams')).json, [
      { teamID: 'kiln', name: 'kiln', apiKey: h.apiKey, isDefault: true },
    ]);
    assert.equal((await h.raw('GET', '/api-keys')).status, 403, 'not an admin key');
    const adm = h.keys.create('adm', { admin: true }).key;
    const made = await h.raw('POST', '/api-keys', { name: 'via-api' }, adm);
    assert.equal(made.status, 201);
    const k = made.json as {
      id: string;
      key: string;
      name: string;
      mask: { prefix: string; maskedValuePrefix: string };
    };
    assert.match(k.key, /^e2b_[0-9a-f]{40}$/);
    assert.equal(k.key.slice(4, 10), k.mask.maskedValuePrefix);
    assert.equal((await h.raw('GET', '/v2/sandboxes', undefined, k.key)).status, 200, 'the new key works');
    const listed = (await h.raw('GET', '/api-keys', undefined, adm)).json as { id: string; name: string }[];
    assert.ok(listed.some((x) => x.id === k.id && x.name === 'via-api'));
    assert.ok(!JSON.stringify(listed).includes(k.key), 'keys are never listed');
    assert.equal((await h.raw('DELETE', `/api-keys/${k.id}`, undefined, adm)).status, 204);
    assert.equal((await h.raw('GET', '/v2/sandboxes', undefined, k.key)).status, 401, 'deleted');
    assert.equal((await h.raw('DELETE', `/api-keys/${k.id}`, undefined, adm)).status, 404);
    for (const T of [Template, Template245]) {
      assert.equal(await T.exists('base', h.opts()), true);
      assert.equal(await T.exists('no-such-template', h.opts()), false);
    }
    await (await Sandbox.create('base', h.opts())).kill();
    const alias = await h.raw('GET', '/templates/aliases/base');
    assert.deepEqual(alias.json, {
      templateID: h.svc.templates().find((t) => t.name === 'base')?.id,
      public: true,
    });
  });

  it('E2B cloud-only routes answer 404 naming the route and why, not "no route"', async () => {
    const r = await h.raw('GET', '/nodes');
    assert.deepEqual(r.json, {
      code: 404,
      message:
        'GET /nodes is not available on a single-host kiln: E2B cloud cluster nodes; a kiln host is one node',
    });
    for (const [m, p] of [
      ['POST', '/admin/teams/t1/sandboxes/kill'],
      ['POST', '/access-tokens'],
      ['PATCH', '/api-keys/key-1'],
      ['GET', '/teams/kiln/metrics'],
    ] as const) {
      const x = await h.raw(m, p, m === 'GET' ? undefined : {});
      assert.equal(x.status, 404);
      assert.match((x.json as { message: string }).message, /is not available on a single-host kiln: /);
    }
  });

  it('the route table: kiln registers exactly the routes it claims, and the README lists each', async () => {
    const routes = e2bRoutes({
      svc: h.svc,
      keys: h.keys,
      buildTemplate: () => Promise.reject(new Error('unused')),
    });
    const registered = routes.map((r) => `${r.method} ${r.path}`);
    assert.equal(new Set(registered).size, registered.length, 'no route twice');
    assert.deepEqual(registered.sort(), [...E2B_SERVED, ...E2B_REFUSED.map(([r]) => r)].sort());
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const shown = (r: string): string => '`' + r.replace(/:(\w+)/g, '{$1}') + '`';
    for (const r of [...E2B_SERVED, ...E2B_REFUSED.map(([x]) => x)])
      assert.ok(readme.includes(shown(r)), `README lists ${shown(r)}`);
  });
});
