/**
 * The hardened listener on its own: malformed HTTP answered 400 in the listener's error shape,
 * deadlines for the request head, idle connections giving way near the cap while busy ones are
 * kept, and the cap itself.
 */
import assert from 'node:assert/strict';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import { openIdle, rawRequest, type RawOutcome, type RawResponse } from '../../test/helpers/raw-http.ts';
import { createListener, type ListenerLimits } from './listener.ts';

const LIMITS: ListenerLimits = {
  maxConnections: 100,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 0,
  keepAliveTimeoutMs: 5_000,
  maxRequestsPerSocket: 0,
};

const response = (o: RawOutcome): RawResponse => {
  assert.equal(o.kind, 'response', JSON.stringify(o));
  return (o as { res: RawResponse }).res;
};

const closed = (s: Socket): Promise<void> =>
  new Promise((r) => {
    if (s.destroyed) r();
    else {
      s.once('close', () => {
        r();
      });
      // Read to the end: a paused socket never sees the server's FIN.
      s.resume();
    }
  });

describe('hardened listener', () => {
  const servers: Server[] = [];
  /** Requests held open by the `/hold` route, to be answered by the test. */
  const held: ServerResponse[] = [];
  const start = async (limits: Partial<ListenerLimits> = {}): Promise<number> => {
    const s = createListener(
      (req, res) => {
        if (req.url === '/throw') throw new Error('sync bug');
        if (req.url === '/hold') {
          held.push(res);
          res.writeHead(200);
          res.write('streaming\n');
          return;
        }
        res.writeHead(200, { 'content-length': 2 }).end('ok');
      },
      {
        name: 'test',
        limits: { ...LIMITS, ...limits },
        log: nullLogger,
        errorBody: (e: KilnError, opId) => ({ code: e.status, message: e.message, op: opId.slice(0, 4) }),
      },
    );
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as AddressInfo).port;
  };
  after(() => {
    for (const r of held) r.destroy();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  it("malformed HTTP is 400 with the listener's error body naming what was wrong", async () => {
    const port = await start();
    const cases: [string, string][] = [
      [
        'GET / HTTP/1.1\r\nHo st: x\r\n\r\n',
        'headers: malformed HTTP request (HPE_INVALID_HEADER_TOKEN: Invalid header token)',
      ],
      [
        'G@T / HTTP/1.1\r\nHost: x\r\n\r\n',
        'method: malformed HTTP request (HPE_INVALID_METHOD: Invalid method encountered)',
      ],
      [
        'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n',
        'content-length: malformed HTTP request (HPE_INVALID_CONTENT_LENGTH: Invalid character in Content-Length)',
      ],
      [
        `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`,
        'headers: the request head is too large (at most 16 KiB)',
      ],
      ['GET / HTTP/1.1\r\n\r\n', 'host: the Host header is required (HTTP/1.1)'],
    ];
    for (const [req, message] of cases) {
      const r = response(await rawRequest({ port }, req));
      assert.equal(r.status, 400, req.slice(0, 40));
      assert.deepEqual(JSON.parse(r.body), { code: 400, message, op: 'req-' }, req.slice(0, 40));
      assert.equal(r.headers['connection'], 'close');
    }
    const http10 = response(await rawRequest({ port }, 'GET / HTTP/1.0\r\n\r\n'));
    assert.equal(http10.status, 200, 'HTTP/1.0 needs no Host');
  });

  it("a handler that throws synchronously is answered 500 in the listener's shape", async () => {
    const port = await start();
    const r = response(await rawRequest({ port }, 'GET /throw HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.deepEqual([r.status, JSON.parse(r.body)], [500, { code: 500, message: 'sync bug', op: 'req-' }]);
  });

  it('a request head not sent in time: 408 and the connection is closed (silent ones too)', async () => {
    const port = await start({ headersTimeoutMs: 300 });
    const partial = await openIdle({ port });
    partial.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    let got = '';
    partial.on('data', (d: Buffer) => (got += d.toString()));
    const silent = await openIdle({ port });
    const t0 = Date.now();
    await Promise.all([closed(partial), closed(silent)]);
    assert.ok(Date.now() - t0 < 3000, `closed after ${Date.now() - t0} ms`);
    assert.match(got, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('near the cap, the oldest idle connections give way: a new client is served, busy ones are kept', async () => {
    const port = await start({ maxConnections: 20 });
    const busy = await openIdle({ port });
    busy.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise<void>((r) =>
      busy.once('data', () => {
        r();
      }),
    );
    const idle: Socket[] = [];
    for (let i = 0; i < 40; i++) idle.push(await openIdle({ port }));
    const served = response(await rawRequest({ port }, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.equal(served.status, 200);
    assert.equal(busy.destroyed, false, 'a connection with a request in progress is never closed');
    // The oldest idle ones were closed to make room.
    await Promise.all(idle.slice(0, 10).map(closed));
    const server = servers.at(-1);
    const count = await new Promise<number>((r, j) =>
      server?.getConnections((e, n) => {
        if (e) j(e);
        else r(n);
      }),
    );
    assert.ok(count < 20, `${count} connections: the listener stayed under its cap`);
    const last = held.at(-1);
    last?.end('done\n');
    for (const s of idle) s.destroy();
    busy.destroy();
  });

  it('at the cap with every connection busy, new connections are refused', async () => {
    const port = await start({ maxConnections: 3 });
    const busy: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await openIdle({ port });
      s.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise<void>((r) =>
        s.once('data', () => {
          r();
        }),
      );
      busy.push(s);
    }
    const extra = await rawRequest({ port }, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(extra.kind === 'closed' || extra.kind === 'reset', JSON.stringify(extra));
    assert.deepEqual(
      busy.map((s) => s.destroyed),
      [false, false, false],
    );
    for (const s of busy) s.destroy();
  });
});
