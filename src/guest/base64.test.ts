import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { installToBase64, toBase64 } from './base64.ts';

test('toBase64 encodes only the view, at any offset, with the alphabet and padding asked for', () => {
  const all = new Uint8Array(randomBytes(64));
  for (let off = 0; off < 5; off++)
    for (let len = 0; len < 9; len++) {
      const view = all.subarray(off, off + len);
      const buf = Buffer.from(all.subarray(off, off + len));
      const std = buf.toString('base64');
      assert.equal(toBase64(view), std);
      assert.equal(toBase64(view, { alphabet: 'base64', omitPadding: true }), std.replace(/=+$/, ''));
      const url = buf.toString('base64url');
      assert.equal(toBase64(view, { alphabet: 'base64url', omitPadding: true }), url);
      assert.equal(toBase64(view, { alphabet: 'base64url' }), url + '='.repeat((4 - (url.length % 4)) % 4));
    }
  assert.throws(
    () => toBase64(all, { alphabet: 'hex' as 'base64' }),
    /alphabet must be "base64" or "base64url"/,
  );
});

test('installed before protobuf-es loads, it is what protobuf-es encodes bytes with, views included', async () => {
  assert.equal(
    typeof (Uint8Array.prototype as { toBase64?: unknown }).toBase64,
    'function',
    'installed on import',
  );
  assert.equal(installToBase64(), false, 'a second install leaves the method alone');
  // Count the calls, then load protobuf-es (nothing in this file loaded it before).
  const proto = Uint8Array.prototype as unknown as { toBase64: (o?: object) => string };
  const own = proto.toBase64;
  let calls = 0;
  proto.toBase64 = function (this: Uint8Array, o?: object) {
    calls++;
    return own.call(this, o);
  };
  try {
    const { base64Encode } = await import('@bufbuild/protobuf/wire');
    const view = new Uint8Array([0, 1, 2, 3, 250, 251, 252]).subarray(3);
    assert.equal(base64Encode(view), Buffer.from([3, 250, 251, 252]).toString('base64'));
    assert.equal(base64Encode(view, 'url'), Buffer.from([3, 250, 251, 252]).toString('base64url'));
    assert.equal(calls, 2);
  } finally {
    proto.toBase64 = own;
  }
});
