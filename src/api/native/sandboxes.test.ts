/**
 * The native create builds the default template on first use (as the E2B create does; the CLI
 * relies on it): one build for concurrent first creates, none for bad input or other templates.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BUILDER_METADATA_KEY } from '../../core/defaults.ts';
import { NativeHarness } from '../testing/harness.ts';

describe('native create: the default template on first use', () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start()));
  after(() => h.close());
  const create = (body: unknown) => h.call('POST', '/v1/sandboxes', body);

  it('bad input and other templates build nothing; two first creates of base share one build', async () => {
    assert.equal((await create({ template: 'base', timeoutS: 'x' })).status, 400);
    assert.equal((await create({ template: 'base', metadata: { a: 1 } })).status, 400);
    const other = await create({ template: 'nope' });
    assert.deepEqual([other.status, other.json?.['code']], [404, 'not_found']);
    assert.deepEqual(h.builds, [], 'nothing built yet');
    const [a, b] = await Promise.all([create({ template: 'base' }), create({ template: 'base' })]);
    assert.deepEqual(
      [a.status, b.status, a.json?.['state'], b.json?.['state']],
      [201, 201, 'running', 'running'],
    );
    assert.deepEqual(h.builds, [{ name: 'base', memoryMiB: 512, vcpus: 1 }]);
    assert.equal((await create({ template: 'base' })).status, 201);
    assert.equal(h.builds.length, 1, 'built once');
  });
});

describe('native ports: GET /v1/sandboxes/{id}/ports/{port}', () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start({ base: true })));
  after(() => h.close());

  it('answers the published URL of a live sandbox; bad ports, the agent port and unknown ids are refused', async () => {
    const id = (await h.call('POST', '/v1/sandboxes', { template: 'base' })).json?.['sandboxId'] as string;
    const r = await h.call('GET', `/v1/sandboxes/${id}/ports/8000`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, {
      sandboxId: id,
      port: 8000,
      host: `8000-${id}.localhost:2`,
      url: `http://8000-${id}.localhost:2/`,
    });
    for (const bad of ['0', '65536', 'http', '49983']) {
      const b = await h.call('GET', `/v1/sandboxes/${id}/ports/${bad}`);
      assert.deepEqual([b.status, b.json?.['code']], [400, 'invalid_argument'], bad);
      assert.match(String(b.json?.['message']), /port/);
    }
    assert.equal((await h.call('GET', '/v1/sandboxes/sbx-nope/ports/8000')).status, 404);
    await h.call('DELETE', `/v1/sandboxes/${id}`);
    assert.equal((await h.call('GET', `/v1/sandboxes/${id}/ports/8000`)).status, 409);
  });
});

describe("native list: kiln's own template builder sandboxes are left out", () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start({ base: true })));
  after(() => h.close());

  it('GET /v1/sandboxes does not list a sandbox marked as a builder; GET of it by id still works', async () => {
    const mine = (await h.call('POST', '/v1/sandboxes', { template: 'base' })).json?.['sandboxId'];
    const builder = await h.svc.create({
      template: 'base',
      metadata: { [BUILDER_METADATA_KEY]: 'bld-1' },
    });
    const listed = (await h.call('GET', '/v1/sandboxes')).json?.['items'] as { sandboxId: string }[];
    assert.deepEqual(
      listed.map((s) => s.sandboxId),
      [mine],
    );
    assert.equal((await h.call('GET', `/v1/sandboxes/${builder.id}`)).status, 200);
  });
});
