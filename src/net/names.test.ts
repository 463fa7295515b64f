import assert from 'node:assert/strict';
import { it } from 'node:test';
import { hostTable, instanceTag, slotNames, slotOfInterface, slotOfNamespace } from './names.ts';

it('instanceTag: 6 hex digits of the resolved state dir; differs between dirs', () => {
  const t = instanceTag('/tmp/kiln-a');
  assert.match(t, /^[0-9a-f]{6}$/);
  assert.equal(instanceTag('/tmp/./kiln-a/'), t, 'the same dir, written otherwise');
  assert.notEqual(instanceTag('/tmp/kiln-b'), t);
});

it('names of a slot, and back: only this instance, only slots 0..255', () => {
  const n = slotNames('abc123', 7);
  assert.deepEqual(n, { ns: 'kiln-abc123-7', hostIf: 'knabc1237' });
  assert.equal(hostTable('abc123'), 'kiln_net_abc123');
  assert.ok(slotNames('abc123', 255).hostIf.length <= 15, 'fits IFNAMSIZ');
  assert.equal(slotOfNamespace('abc123', 'kiln-abc123-7'), 7);
  assert.equal(slotOfNamespace('abc123', 'kiln-abc123-255'), 255);
  assert.equal(slotOfInterface('abc123', 'knabc1237'), 7);
  assert.equal(slotOfInterface('abc123', 'knabc123255'), 255);
  for (const other of [
    'kiln-abc124-7',
    'kiln-abc123-256',
    'kiln-abc123-',
    'kiln-abc123-7x',
    'x-kiln-abc123-7',
  ])
    assert.equal(slotOfNamespace('abc123', other), undefined, other);
  for (const other of ['knabc124', 'knabc1231000', 'knabc123', 'eth0', 'knabc123256'])
    assert.equal(slotOfInterface('abc123', other), undefined, other);
});
