/**
 * The E2B-compatible API in-process over the fake-driver service, driven by the real `e2b` SDK
 * where it speaks to the control plane only (create, info, list, timeout, metrics, kill) and by
 * raw HTTP for exact status codes and bodies. The envd side through real guests is
 * test/integration/e2b-sdk.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuthenticationError, Sandbox, SandboxNotFoundError } from 'e2b';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B API: keys, create, info, list, pause, connect, snapshots and fork (fake driver, real e2b SDK)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  it('a missing or wrong API key is 401 {code, message}; the SDK raises AuthenticationError', async () => {
    const none = await h.raw('GET', '/v2/sandboxes', undefined, null);
    assert.equal(none.status, 401);
    assert.deepEqual(none.json, {
      code: 401,
      message: 'missing API key: set the X-API-KEY header (E2B_API_KEY)',
    });
    const wrong = await h.raw('GET', '/sandboxes/x', undefined, 'e2b_' + '0'.repeat(40));
    assert.deepEqual([wrong.status, (wrong.json as { code: number }).code], [401, 401]);
    await assert.rejects(Sandbox.create('base', { ...h.opts(), apiKey: 'e2b_wrong' }), AuthenticationError);
    await assert.rejects(Sandbox.list({ ...h.opts(), apiKey: 'e2b_wrong' }).nextItems(), AuthenticationError);
    assert.equal(h.builds.length, 0, 'nothing was built for an unauthenticated request');
  });

  it('create "base" builds the template once on first use; info, metrics, timeout and kill through the SDK', async () => {
    const [sbx, twin] = await Promise.all([
      Sandbox.create('base', { ...h.opts(), metadata: { team: 'a' }, timeoutMs: 60_000 }),
      Sandbox.create('base', h.opts()),
    ]);
    assert.equal(h.builds.length, 1, 'two first creates wait for one build');
    await twin.kill();
    assert.match(sbx.sandboxId, /^sbx-/);
    const rec = h.svc.get(sbx.sandboxId);
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
    const again = await Sandbox.create('base', h.opts());
    assert.equal(h.builds.length, 1, 'built once');
    assert.equal(await Sandbox.kill(again.sandboxId, h.opts()), true);
    assert.equal(await Sandbox.kill(again.sandboxId, h.opts()), false, 'a dead sandbox is not found');
    await assert.rejects(Sandbox.getInfo(again.sandboxId, h.opts()), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(again.sandboxId, h.opts()), SandboxNotFoundError);
    await assert.rejects(Sandbox.setTimeout('sbx-nope', 1000, h.opts()), SandboxNotFoundError);
    await sbx.kill();
  });

  it('list: metadata and state filters as the SDK encodes them, X-Next-Token paging, dead ones left out', async () => {
    const made = [];
    for (let i = 0; i < 5; i++)
      made.push(
        await Sandbox.create('base', { ...h.opts(), metadata: { batch: 'L', 'odd key&=': `v ${i % 2}` } }),
      );
    await made[4]?.kill();
    const pager = Sandbox.list({
      ...h.opts(),
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
      made
        .slice(0, 4)
        .map((s) => s.sandboxId)
        .reverse(),
      'newest first, the SDK default',
    );
    assert.equal(pages, 2);
    const odd = await Sandbox.list({ ...h.opts(), query: { metadata: { 'odd key&=': 'v 1' } } }).nextItems();
    assert.deepEqual(
      odd.map((s) => s.sandboxId),
      [made[3]?.sandboxId, made[1]?.sandboxId],
    );
    const paused = await Sandbox.list({ ...h.opts(), query: { state: ['paused'] } }).nextItems();
    assert.deepEqual(paused, []);
    const page = await h.raw('GET', '/v2/sandboxes?metadata=batch%3DL&limit=3');
    assert.equal(page.headers.get('x-next-token') !== null, true);
    for (const s of made.slice(0, 4)) await s.kill();
  });

  it('pause (204, then 409), connect resumes (201) or just connects (200), snapshots and fork: exact shapes', async () => {
    const created = await h.raw('POST', '/v2/sandboxes', { templateID: 'base' });
    const id = (created.json as { sandboxID: string }).sandboxID;
    const token = (created.json as { envdAccessToken: string }).envdAccessToken;
    assert.equal((await h.raw('POST', `/sandboxes/${id}/pause`, {})).status, 204);
    const again = await h.raw('POST', `/sandboxes/${id}/pause`, {});
    assert.deepEqual(
      [again.status, again.json],
      [409, { code: 409, message: `sandbox ${id} is already paused` }],
    );
    assert.equal(((await h.raw('GET', `/sandboxes/${id}`)).json as { state: string }).state, 'paused');
    const resumed = await h.raw('POST', `/v2/sandboxes/${id}/connect`, { timeout: 60 });
    assert.equal(resumed.status, 201);
    assert.equal((resumed.json as { envdAccessToken: string }).envdAccessToken, token, 'same token');
    assert.equal((await h.raw('POST', `/v2/sandboxes/${id}/connect`, {})).status, 200);
    const snap = await h.raw('POST', `/sandboxes/${id}/snapshots`, { name: 'api-snap' });
    assert.equal(snap.status, 201);
    const snapId = (snap.json as { snapshotID: string }).snapshotID;
    assert.deepEqual(snap.json, { snapshotID: snapId, names: ['api-snap'] });
    const listed = await h.raw('GET', `/snapshots?sandboxID=${id}`);
    assert.deepEqual(listed.json, [{ snapshotID: snapId, names: ['api-snap'] }]);
    const fromSnap = await h.raw('POST', '/v2/sandboxes', { templateID: 'api-snap' });
    assert.equal(fromSnap.status, 201);
    const forked = await h.raw('POST', `/sandboxes/${id}/fork`, { count: 2, timeout: 60 });
    assert.equal(forked.status, 201);
    const results = forked.json as { sandbox: { sandboxID: string; envdVersion: string } }[];
    assert.equal(results.length, 2);
    for (const r of results) assert.equal(r.sandbox.envdVersion, '0.6.13');
    assert.equal((await h.raw('DELETE', `/templates/${snapId}`)).status, 204);
    assert.deepEqual((await h.raw('GET', `/snapshots?sandboxID=${id}`)).json, []);
    assert.equal((await h.raw('POST', '/v2/sandboxes', { templateID: 'api-snap' })).status, 404);
    assert.equal((await h.raw('DELETE', `/templates/${snapId}`)).status, 404);
    for (const x of [
      id,
      (fromSnap.json as { sandboxID: string }).sandboxID,
      ...results.map((r) => r.sandbox.sandboxID),
    ])
      assert.equal((await h.raw('DELETE', `/sandboxes/${x}`)).status, 204);
    assert.equal((await h.raw('POST', '/sandboxes/sbx-nope/pause', {})).status, 404);
    assert.equal((await h.raw('POST', '/sandboxes/sbx-nope/fork', { count: 1 })).status, 404);
    assert.equal(
      (await h.raw('POST', `/sandboxes/${id}/snapshots`, {})).status,
      404,
      'a dead sandbox is gone',
    );
    assert.equal((await h.raw('GET', '/snapshots?limit=0')).status, 400);
    assert.equal((await h.raw('DELETE', '/templates/not..valid')).status, 404, 'the SDK answers false');
  });

  it('mcp and iam tokens are refused with 400 naming the field; an empty iam asks for nothing', async () => {
    const before = h.svc.list({}, { limit: 1000 }).items.length;
    await assert.rejects(
      Sandbox.create({ ...h.opts(), mcp: { exa: { apiKey: 'k' } } } as Parameters<typeof Sandbox.create>[1]),
      (e: Error) => /mcp: the MCP gateway needs E2B's mcp-gateway template/.test(e.message),
    );
    const iam = await h.raw('POST', '/v2/sandboxes', {
      templateID: 'base',
      iam: { tokens: { gh: { tokenType: 'oidc' } } },
    });
    assert.equal(iam.status, 400);
    assert.match((iam.json as { message: string }).message, /^iam: workload identity tokens are resolved/);
    const empty = await h.raw('POST', '/v2/sandboxes', { templateID: 'base', iam: { tokens: {} } });
    assert.equal(empty.status, 201);
    await Sandbox.kill((empty.json as { sandboxID: string }).sandboxID, h.opts());
    assert.equal(
      h.svc.list({}, { limit: 1000 }).items.length,
      before + 1,
      'the refused creates made nothing',
    );
  });

  it('pause({keepMemory: false}) sends {memory: false}: a filesystem-only pause; onTimeout keepMemory: false is stored', async () => {
    const sbx = await Sandbox.create('base', h.opts());
    assert.equal(await sbx.pause({ ...h.opts(), keepMemory: false }), true);
    assert.equal(h.svc.get(sbx.sandboxId).pauseKind, 'filesystem');
    const mem = await Sandbox.create('base', h.opts());
    assert.equal(await mem.pause(h.opts()), true);
    assert.equal(h.svc.get(mem.sandboxId).pauseKind, 'memory', 'memory is kept by default');
    const timed = await Sandbox.create('base', {
      ...h.opts(),
      lifecycle: { onTimeout: { action: 'pause', keepMemory: false } },
    });
    assert.equal(h.svc.get(timed.sandboxId).autoPauseMemory, false);
    assert.deepEqual((await h.raw('POST', `/sandboxes/${timed.sandboxId}/pause`, { memory: 'no' })).json, {
      code: 400,
      message: 'memory: must be true or false, got "no"',
    });
    const bad = await h.raw('POST', '/v2/sandboxes', {
      templateID: 'base',
      autoPause: true,
      autoPauseMemory: false,
      autoResume: { enabled: true },
    });
    assert.equal(bad.status, 400);
    assert.match(
      (bad.json as { message: string }).message,
      /^autoPauseMemory: false cannot go with autoResume/,
    );
    for (const x of [sbx, mem, timed]) await Sandbox.kill(x.sandboxId, h.opts());
  });

  it("connect({onResume: 'reboot'}) sends {memory: false}: a memory pause cold-boots; resume takes memory too; a non-boolean is 400", async () => {
    const started: { restore: boolean }[] = [];
    const start = h.driver.start.bind(h.driver);
    h.driver.start = (spec, o) => {
      started.push({ restore: spec.restore !== undefined });
      return start(spec, o);
    };
    try {
      const sbx = await Sandbox.create('base', h.opts());
      await sbx.pause(h.opts());
      const back = await Sandbox.connect(sbx.sandboxId, { ...h.opts(), onResume: 'reboot' });
      assert.equal(back.sandboxId, sbx.sandboxId);
      assert.deepEqual(started.at(-1), { restore: false }, 'a cold boot');
      const ev = h.store.listEvents(sbx.sandboxId).items.at(-1);
      assert.equal(ev?.data?.['memoryIgnored'], true);

      await sbx.pause(h.opts());
      const r = await h.raw('POST', `/sandboxes/${sbx.sandboxId}/resume`, { memory: false });
      assert.equal(r.status, 201);
      assert.deepEqual(started.at(-1), { restore: false }, 'the deprecated resume reboots too');

      await sbx.pause(h.opts());
      for (const path of [
        `/v2/sandboxes/${sbx.sandboxId}/connect`,
        `/sandboxes/${sbx.sandboxId}/connect`,
        `/sandboxes/${sbx.sandboxId}/resume`,
      ])
        assert.deepEqual((await h.raw('POST', path, { timeout: 30, memory: 'no' })).json, {
          code: 400,
          message: 'memory: must be true or false, got "no"',
        });
      assert.equal(h.svc.get(sbx.sandboxId).state, 'paused', 'a refused body resumes nothing');
      await Sandbox.connect(sbx.sandboxId, { ...h.opts(), onResume: 'restore' });
      assert.deepEqual(started.at(-1), { restore: true }, "onResume: 'restore' keeps memory");
      await Sandbox.kill(sbx.sandboxId, h.opts());
    } finally {
      h.driver.start = start;
    }
  });
});
