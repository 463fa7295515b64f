/**
 * The router as an error boundary: request targets, percent-escapes, throwing handlers and
 * authentication, and clients that hang up, with exact statuses and bodies, over raw sockets
 * (a client library would refuse or fix up most of these requests before sending them).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KilnError, invalidArgument } from '../core/errors.ts';
import { captureLog } from '../../test/helpers/log-capture.ts';
import { openIdle, rawRequest, type RawOutcome, type RawResponse } from '../../test/helpers/raw-http.ts';
import { createRouter, decodeParam, parseTarget, type Route } from './http.ts';

const response = (o: RawOutcome): RawResponse => {
  assert.equal(o.kind, 'response', JSON.stringify(o));
  return (o as { res: RawResponse }).res;
};
const json = (r: RawResponse): Record<string, unknown> => JSON.parse(r.body) as Record<string, unknown>;

describe('parseTarget and decodeParam', () => {
  it('origin-form and absolute-form parse; what new URL() or decodeURIComponent throw on is invalid_argument', () => {
    assert.equal(parseTarget('/v1/sandboxes/x?a=1').pathname, '/v1/sandboxes/x');
    assert.equal(parseTarget('/v1/sandboxes/x?a=1').searchParams.get('a'), '1');
    assert.equal(parseTarget(undefined).pathname, '/');
    assert.equal(parseTarget('http://elsewhere:1/v1/health').pathname, '/v1/health');
    assert.equal(parseTarget('/%ZZ').pathname, '/%ZZ', 'escapes are decoded per parameter, later');
    for (const [raw, why] of [
      ['//[/', 'a path must not start with "//"'],
      ['//evil.example/x', 'a path must not start with "//"'],
      ['*', 'expected a path starting with "/"'],
      ['[', 'expected a path starting with "/"'],
      ['ftp://x/y', 'only http(s) URLs'],
    ]) {
      let err: unknown;
      try {
        parseTarget(raw);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof KilnError, raw);
      assert.equal(err.code, 'invalid_argument');
      assert.equal(err.message, `url: ${JSON.stringify(raw)} is not a valid request target: ${why}`);
      assert.deepEqual(err.details, { field: 'url' });
    }
    assert.equal(decodeParam('id', 'a%20b'), 'a b');
    for (const bad of ['%ZZ', '%E0%A4%A', '%', '%C3']) {
      assert.throws(
        () => decodeParam('id', bad),
        (e: unknown) =>
          e instanceof KilnError &&
          e.code === 'invalid_argument' &&
          e.message === `id: ${JSON.stringify(bad)} is not valid percent-encoding (UTF-8 bytes as %XX)`,
      );
    }
    const long = '/' + 'a'.repeat(500) + '%';
    assert.equal(decodeParam('x', 'ok'), 'ok');
    assert.throws(
      () => decodeParam('id', long),
      (e: unknown) => e instanceof KilnError && e.message.length < 200,
      'hostile input is echoed cut short',
    );
  });
});

describe('router: error boundary', () => {
  let server: Server;
  let e2bLike: Server;
  let port: number;
  let e2bPort: number;
  const cap = captureLog();
  let bodyRead: (() => void) | undefined;
  const routes: Route[] = [
    { method: 'GET', path: '/v1/things/:id', handler: (c) => Promise.resolve({ id: c.params['id'] }) },
    {
      method: 'GET',
      path: '/v1/throws/sync',
      handler: () => {
        throw new Error('handler bug');
      },
    },
    {
      method: 'GET',
      path: '/v1/throws/string',
      handler: () => Promise.reject(new Error('not an Error', { cause: 'x' })),
    },
    {
      method: 'GET',
      path: '/v1/throws/kiln',
      handler: () => {
        throw invalidArgument('thing', 'is wrong');
      },
    },
    {
      method: 'POST',
      path: '/v1/body',
      handler: async (c) => {
        const p = c.body();
        bodyRead?.();
        return p;
      },
    },
  ];
  before(async () => {
    server = createServer(createRouter(routes, cap.log));
    e2bLike = createServer(
      createRouter(routes, cap.log, {
        errorBody: (e) => ({ code: e.status, message: e.message }),
        authenticate: (req) => {
          if (req.headers['x-api-key'] !== 'good') throw new KilnError('unauthenticated', 'missing API key');
        },
      }),
    );
    for (const s of [server, e2bLike]) await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    e2bPort = (e2bLike.address() as AddressInfo).port;
  });
  after(() => {
    for (const s of [server, e2bLike]) {
      s.closeAllConnections();
      s.close();
    }
  });

  const get = async (target: string, p = port, headers = ''): Promise<RawResponse> =>
    response(await rawRequest({ port: p }, `GET ${target} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`));

  it('the crash inputs of issue 10 are 400 invalid_argument naming the URL or the parameter', async () => {
    const cases: [string, string][] = [
      ['//[/', 'url: "//[/" is not a valid request target: a path must not start with "//"'],
      ['/v1/things/%ZZ', 'id: "%ZZ" is not valid percent-encoding (UTF-8 bytes as %XX)'],
      ['/v1/things/%E0%A4%A', 'id: "%E0%A4%A" is not valid percent-encoding (UTF-8 bytes as %XX)'],
    ];
    for (const [target, message] of cases) {
      const r = await get(target);
      assert.equal(r.status, 400, target);
      const b = json(r);
      assert.deepEqual(b, { code: 'invalid_argument', message, details: b['details'], opId: b['opId'] });
      assert.equal(r.headers['x-kiln-op-id'], b['opId']);
      assert.match(String(b['opId']), /^req-/);
    }
    const ok = await get('/v1/things/a%20b');
    assert.deepEqual([ok.status, json(ok)], [200, { id: 'a b' }]);
    const abs = await get('http://h/v1/things/z');
    assert.deepEqual([abs.status, json(abs)], [200, { id: 'z' }], 'absolute-form is served');
  });

  it("a bad URL is refused before authentication, in the listener's error shape; then 401", async () => {
    const bad = await get('//[/', e2bPort);
    assert.deepEqual(
      [bad.status, json(bad)],
      [
        400,
        { code: 400, message: 'url: "//[/" is not a valid request target: a path must not start with "//"' },
      ],
    );
    const esc = await get('/v1/things/%ZZ', e2bPort);
    assert.deepEqual([esc.status, json(esc)], [401, { code: 401, message: 'missing API key' }]);
    const keyed = await get('/v1/things/%ZZ', e2bPort, 'X-API-KEY: good\r\n');
    assert.deepEqual(
      [keyed.status, json(keyed)],
      [400, { code: 400, message: 'id: "%ZZ" is not valid percent-encoding (UTF-8 bytes as %XX)' }],
    );
  });

  it('a handler that throws is answered (500 internal, or its catalog status); unknown routes 404, wrong method 400', async () => {
    const sync = await get('/v1/throws/sync');
    assert.equal(sync.status, 500);
    assert.deepEqual({ ...json(sync), opId: 0 }, { code: 'internal', message: 'handler bug', opId: 0 });
    const rej = await get('/v1/throws/string');
    assert.equal(rej.status, 500);
    const kiln = await get('/v1/throws/kiln');
    assert.deepEqual(
      [kiln.status, { ...json(kiln), opId: 0 }],
      [400, { code: 'invalid_argument', message: 'thing: is wrong', details: { field: 'thing' }, opId: 0 }],
    );
    const none = await get('/nope/%ZZ');
    assert.deepEqual(
      [none.status, { ...json(none), opId: 0 }],
      [404, { code: 'not_found', message: 'no route GET /nope/%ZZ', opId: 0 }],
    );
    const method = response(await rawRequest({ port }, 'DELETE /v1/things/a HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.deepEqual(
      [method.status, { ...json(method), opId: 0 }],
      [400, { code: 'invalid_argument', message: 'method DELETE is not allowed on /v1/things/a', opId: 0 }],
    );
    const bigBody = response(
      await rawRequest({ port }, 'POST /v1/body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{1}'),
    );
    assert.equal(bigBody.status, 400);
    assert.match(String(json(bigBody)['message']), /^body: malformed JSON/);
  });

  it('a client that hangs up mid-body is logged as gone (info), not as an error', async () => {
    const n0 = cap.lines.length;
    const read = new Promise<void>((r) => (bodyRead = r));
    const s = await openIdle({ port });
    s.write(
      'POST /v1/body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":',
    );
    await read;
    const gone = cap.waitFor((l) => l['msg'] === 'client went away');
    s.destroy();
    await gone;
    const mine = cap.lines.slice(n0);
    assert.deepEqual(
      mine.filter((l) => (l['level'] as number) >= 50),
      [],
      'no error line for a client that went away',
    );
    assert.equal(mine.find((l) => l['msg'] === 'client went away')?.['level'], 30);
  });
});
