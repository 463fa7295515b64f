import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildImageFromOciInChild } from './build-oci-child.ts';

test('the child build answers bad input with its own error code', async () => {
  await assert.rejects(
    buildImageFromOciInChild({ reference: 'debian:12', name: 'x', cacheDir: '/nonexistent/kiln-cache' }),
    (e: Error & { code?: string }) =>
      e.code === 'invalid_argument' && /must name the registry/.test(e.message),
  );
});
