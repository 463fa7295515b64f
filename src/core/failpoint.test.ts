import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from './errors.ts';
import { failpointAt, parseFailpoint } from './failpoint.ts';

describe('failpoints', () => {
  it('fires only at the armed <scope>:<name>', () => {
    const hits: string[] = [];
    const fp = failpointAt('pause:vm stopped', (w) => hits.push(w));
    assert.ok(fp);
    fp('pause', 'source paused');
    fp('snapshot', 'vm stopped');
    fp('pause', 'vm stopped');
    assert.deepEqual(hits, ['pause:vm stopped']);
  });

  it('is absent when none is armed, and refuses a malformed spec by name', () => {
    assert.equal(
      failpointAt(undefined, () => undefined),
      undefined,
    );
    assert.equal(
      failpointAt('', () => undefined),
      undefined,
    );
    for (const bad of ['pause', ':x', 'pause:', 'Pause Now:x'])
      assert.throws(
        () => parseFailpoint(bad),
        (e: unknown) =>
          e instanceof KilnError && e.code === 'invalid_argument' && /KILN_FAILPOINT/.test(e.message),
        bad,
      );
  });
});
