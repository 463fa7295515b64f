import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { createAgent } from './agent.ts';

test('the agent answers /health with 204 and unknown routes with 404', async () => {
  const agent = createAgent({ defaultUser: 'root', ptyServer: false });
  await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
  try {
    const h = await fetch(`${base}/health`);
    assert.equal(h.status, 204);
    const n = await fetch(`${base}/nope`);
    assert.equal(n.status, 404);
  } finally {
    await agent.close();
  }
});
