/**
 * The native volume routes and create's `volumeMounts` (fake driver, in-process router): exact
 * bodies and statuses; a mounted volume is not deleted; a bad mount is a 400 naming the field.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NativeHarness } from '../testing/harness.ts';

describe('native API: volumes', () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start({ base: true })));
  after(() => h.close());

  it('create, list, get, mount at create, delete refused while mounted, then deleted', async () => {
    const made = await h.call('POST', '/v1/volumes', { name: 'data' });
    assert.equal(made.status, 201);
    const v = made.json as { id: string; name: string; createdAt: string; mountedBy: string[] };
    assert.deepEqual([v.name, v.mountedBy], ['data', []]);
    assert.deepEqual((await h.call('GET', '/v1/volumes')).json, { items: [v] });
    const dup = await h.call('POST', '/v1/volumes', { name: 'data' });
    assert.deepEqual([dup.status, (dup.json as { code: string }).code], [409, 'already_exists']);
    const bad = await h.call('POST', '/v1/sandboxes', { template: 'base', volumeMounts: [{ name: 'data' }] });
    assert.equal(bad.status, 400);
    assert.match(
      (bad.json as { message: string }).message,
      /^volumeMounts\[0\]: must be \{name: string, path: string\}/,
    );
    const s = await h.call('POST', '/v1/sandboxes', {
      template: 'base',
      volumeMounts: [{ name: 'data', path: '/mnt/data' }],
    });
    assert.equal(s.status, 201);
    const id = (s.json as { sandboxId: string }).sandboxId;
    assert.deepEqual((await h.call('GET', `/v1/volumes/${v.id}`)).json, { ...v, mountedBy: [id] });
    const busy = await h.call('DELETE', '/v1/volumes/data');
    assert.equal(busy.status, 409);
    assert.match((busy.json as { message: string }).message, new RegExp(`is mounted by sandbox ${id}`));
    assert.equal((await h.call('DELETE', `/v1/sandboxes/${id}`)).status, 204);
    assert.equal((await h.call('DELETE', '/v1/volumes/data')).status, 204);
    assert.equal((await h.call('GET', '/v1/volumes/data')).status, 404);
  });
});
