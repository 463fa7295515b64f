/**
 * An upload declared larger than the free space is refused (507) before its body is read, and
 * its connection closes lingering: the agent half-closes and drops what still comes for
 * LINGER_MS before the socket goes. A socket closed at once with the body still arriving is
 * reset, and a reset can make the peer (the envd proxy, still sending the body) lose the 507 it
 * had not read yet: its client got a 502.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createAgent, type Agent } from './agent.ts';

describe('an upload larger than the free space (agent in-process)', () => {
  let agent: Agent;
  let dir: string;
  let port: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-refuse-'));
    agent = createAgent({ defaultUser: 'root', log: () => undefined, ptyServer: false });
    await agent.ready;
    await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
    port = (agent.server.address() as AddressInfo).port;
  });
  after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is answered 507 at once; the sender sees the answer and the close, never a reset', async () => {
    const chunk = Buffer.alloc(64 * 1024);
    const t0 = performance.now();
    const got = await new Promise<{ status: number; body: string; answeredMs: number; error?: string }>(
      (resolve, reject) => {
        let status = 0;
        let body = '';
        let answeredMs = -1;
        const req = request({
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: `/files?path=${encodeURIComponent(join(dir, 'huge.bin'))}`,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(2 ** 50) },
        });
        req.on('response', (res) => {
          status = res.statusCode ?? 0;
          answeredMs = performance.now() - t0;
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
        });
        // The body keeps coming, as the envd proxy pipes a client's, until the connection ends:
        // a reset (EPIPE or ECONNRESET on a write, the bug) or the agent's half-close, after
        // which Node's client closes it.
        const pump = (): void => {
          while (req.write(chunk));
        };
        req.on('drain', pump);
        req.on('error', (e: NodeJS.ErrnoException) => {
          resolve({ status, body, answeredMs, error: e.code ?? e.message });
        });
        req.on('close', () => {
          resolve({ status, body, answeredMs });
        });
        setTimeout(() => {
          reject(new Error('the connection stayed open for 20 s'));
        }, 20_000).unref();
        pump();
      },
    );
    assert.equal(got.error, undefined, `the connection was reset (${got.error})`);
    assert.equal(got.status, 507, got.body);
    assert.match(got.body, /not enough disk space: the upload is 1125899906842624 bytes/);
    assert.ok(got.answeredMs < 5000, `answered after ${got.answeredMs} ms`);
    // Nothing is left of the connection on the agent's side.
    for (let i = 0; i < 50; i++) {
      const open = await new Promise<number>((r, j) => {
        agent.server.getConnections((e, n) => {
          if (e) j(e);
          else r(n);
        });
      });
      if (open === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail('the agent still holds the connection 5 s later');
  });
});
