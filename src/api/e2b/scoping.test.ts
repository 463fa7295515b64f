/** The E2B API's key scoping: another key's sandboxes and snapshots are as good as missing. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B API: API keys are scoped (fake driver, real e2b SDK)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  it("API keys are scoped: another key's sandboxes and snapshots answer exactly as missing ones; admin keys see all", async () => {
    const keyA = h.apiKey;
    const keyB = h.keys.create('b').key;
    const keyAdmin = h.keys.create('ops', { admin: true }).key;
    const as = (key: string) => (method: string, path: string, body?: unknown) =>
      h.raw(method, path, body, key);
    const [A, B, Admin] = [as(keyA), as(keyB), as(keyAdmin)];
    const idOf = (r: { json: unknown }): string => (r.json as { sandboxID: string }).sandboxID;
    const meta = { scope: 'keys' };
    const sa = idOf(await A('POST', '/v2/sandboxes', { templateID: 'base', metadata: meta }));
    const sb = idOf(await B('POST', '/v2/sandboxes', { templateID: 'base', metadata: meta }));
    // Made on the unix socket (no key): admin h.keys only.
    const native = (await h.svc.create({ template: 'base', metadata: meta })).id;
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
    assert.equal(h.svc.get(sa).state, 'running', "B's attempts changed nothing");
    assert.deepEqual(
      h.store.listSnapshots().filter((x) => x.name === 'stolen'),
      [],
    );
    const detail = await Admin('GET', `/sandboxes/${sa}`);
    assert.equal(detail.status, 200, 'an admin key sees every sandbox');
    assert.equal((detail.json as { envdAccessToken: string }).envdAccessToken, h.svc.get(sa).accessToken);
    assert.equal((await Admin('GET', `/sandboxes/${native}`)).status, 200);

    // Snapshots, and what is made from them, belong to the key that makes them.
    const snap = await A('POST', `/sandboxes/${sa}/snapshots`, { name: 'a-snap' });
    assert.equal(snap.status, 201);
    const snapId = (snap.json as { snapshotID: string }).snapshotID;
    assert.equal(h.store.getSnapshot(snapId).ownerKeyId, h.keys.verify(keyA).id);
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
    await h.svc.kill(native);
  });
});
