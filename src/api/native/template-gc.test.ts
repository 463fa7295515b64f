/**
 * POST /v1/templates/gc (fake driver, in-process router): exact bodies and statuses of a dry run
 * and a real pass over an unused hidden template, and 400s naming the field for bad input.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FAKE_IMAGE } from '../../daemon/testing/fixtures.ts';
import { NativeHarness } from '../testing/harness.ts';

describe('native API: template garbage collection', () => {
  let h: NativeHarness;
  before(async () => (h = await NativeHarness.start({ base: true, builds: true })));
  after(() => h.close());

  it('a dry run answers what would go and changes nothing; a pass removes it; bad input is a 400', async () => {
    const t = await h.svc.buildTemplate('kiln-img-api', FAKE_IMAGE, { memoryMiB: 512, vcpus: 1 });
    const snap = h.store.getSnapshot(t.snapshotId ?? '');
    const item = {
      kind: 'template',
      templateId: t.id,
      snapshotId: snap.id,
      name: 'kiln-img-api',
      bytes: snap.artifacts.reduce((n, a) => n + a.size, 0),
      lastUsedAt: snap.createdAt,
      reason: null,
    };
    const dry = await h.call('POST', '/v1/templates/gc', { dryRun: true, graceS: 0 });
    assert.equal(dry.status, 200);
    assert.deepEqual(dry.json, {
      dryRun: true,
      graceS: 0,
      removed: [item],
      kept: [],
      freedBytes: item.bytes,
    });
    assert.equal(h.store.getTemplate(t.id).snapshotId, snap.id, 'the dry run changed nothing');

    const young = await h.call('POST', '/v1/templates/gc', {});
    assert.equal(young.status, 200);
    const kept = (young.json as { kept: { templateId: string; reason: string }[] }).kept;
    assert.deepEqual(
      kept.map((k) => k.templateId),
      [t.id],
    );
    assert.match(kept[0]?.reason ?? '', /^used \d+ s ago \(grace 86400 s\)$/, 'the default grace: a day');

    const r = await h.call('POST', '/v1/templates/gc', { graceS: 0 });
    assert.deepEqual(r.json, { dryRun: false, graceS: 0, removed: [item], kept: [], freedBytes: item.bytes });
    assert.throws(() => h.store.getTemplate(t.id), { code: 'not_found' });
    assert.deepEqual((await h.call('POST', '/v1/templates/gc', { graceS: 0 })).json, {
      dryRun: false,
      graceS: 0,
      removed: [],
      kept: [],
      freedBytes: 0,
    });

    for (const [body, msg] of [
      [{ graceS: -1 }, /^graceS: must be between 0 and 31622400, got -1/],
      [{ graceS: 1.5 }, /^graceS: /],
      [{ dryRun: 'yes' }, /^dryRun: /],
    ] as const) {
      const bad = await h.call('POST', '/v1/templates/gc', body);
      assert.equal(bad.status, 400, JSON.stringify(body));
      assert.equal((bad.json as { code: string }).code, 'invalid_argument');
      assert.match((bad.json as { message: string }).message, msg);
    }
  });
});
