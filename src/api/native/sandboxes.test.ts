/**
 * The native create builds the default template on first use (as the E2B create does; the CLI
 * relies on it): one build for concurrent first creates, none for bad input or other templates.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
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
