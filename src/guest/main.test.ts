import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { createAgentServer } from './main.ts';

test('the agent answers /health with 204 and unknown routes with a JSON 404', async () => {
  const srv = createAgentServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  try {
    const h = await fetch(`${base}/health`);
    assert.equal(h.status, 204);
    const n = await fetch(`${base}/nope`);
    assert.equal(n.status, 404);
    assert.deepEqual(await n.json(), { code: 404, message: 'no route GET /nope' });
  } finally {
    srv.close();
  }
});
