/**
 * The envd proxy's own error handling, over raw sockets, with a stand-in for the sandbox service
 * (the proxy only asks it where a sandbox's agent is) and raw TCP "guests": bad request targets
 * are 400 in E2B's shape and never reach a guest, what reaches a guest is a plain path, a guest
 * answering what Node cannot pass on is 502, and a client hanging up is not a guest failure.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import { captureLog } from '../../test/helpers/log-capture.ts';
import { openIdle, rawRequest, type RawOutcome, type RawResponse } from '../../test/helpers/raw-http.ts';
import { createEnvdProxy, type EnvdProxy } from './envd-proxy.ts';

const response = (o: RawOutcome): RawResponse => {
  assert.equal(o.kind, 'response', JSON.stringify(o));
  return (o as { res: RawResponse }).res;
};

describe('envd proxy: hostile input', () => {
  const cap = captureLog();
  /** Request heads the good guest received. */
  const seen: string[] = [];
  const forgotten: string[] = [];
  let good: Server;
  let broken: TcpServer;
  let slow: Server;
  let proxy: EnvdProxy;
  let server: Server;
  let port: number;
  let slowGotRequest: (() => void) | undefined;
  let slowClosed: Promise<void> = Promise.resolve();

  before(async () => {
    good = createHttpServer((req, res) => {
      seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
      res.writeHead(req.url === '/health' ? 204 : 404).end();
    });
    // A guest that answers a status Node's server cannot repeat (000).
    broken = createTcpServer((s) => {
      s.once('data', () => s.end('HTTP/1.1 000 Odd\r\nContent-Length: 0\r\n\r\n'));
    });
    slow = createHttpServer((req) => {
      slowClosed = new Promise((r) =>
        req.socket.once('close', () => {
          r();
        }),
      );
      slowGotRequest?.();
    });
    for (const s of [good, broken, slow]) await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const urlOf = (s: Server | TcpServer): string => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    const agents: Record<string, string> = {
      'sbx-good': urlOf(good),
      'sbx-broken': urlOf(broken),
      'sbx-slow': urlOf(slow),
    };
    const svc = {
      get: (id: string) => {
        if (!agents[id]) throw new KilnError('not_found', `sandbox "${id}" does not exist`);
        return { id, state: 'running', autoResume: false };
      },
      agent: (id: string) => {
        const baseUrl = agents[id];
        if (!baseUrl) return Promise.reject(new KilnError('not_found', `sandbox "${id}" does not exist`));
        return Promise.resolve({ baseUrl });
      },
      list: () => ({ items: [], next: undefined }),
      forgetAgent: (id: string) => {
        forgotten.push(id);
      },
    } as unknown as SandboxService;
    proxy = createEnvdProxy({ svc, log: cap.log });
    server = createHttpServer(proxy.handle);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    proxy.close();
    for (const s of [server, good, slow]) {
      s.closeAllConnections();
      s.close();
    }
    broken.close();
  });

  const send = async (target: string, id?: string): Promise<RawResponse> =>
    response(
      await rawRequest(
        { port },
        `GET ${target} HTTP/1.1\r\nHost: x\r\n${id ? `E2b-Sandbox-Id: ${id}\r\n` : ''}\r\n`,
      ),
    );

  it("targets new URL() throws on are 400 in E2B's shape, with or without a sandbox, and reach no guest", async () => {
    for (const id of [undefined, 'sbx-good', 'sbx-nope']) {
      const r = await send('//[/', id);
      assert.deepEqual(
        [r.status, JSON.parse(r.body)],
        [
          400,
          {
            code: 400,
            message: 'url: "//[/" is not a valid request target: a path must not start with "//"',
          },
        ],
        String(id),
      );
    }
    assert.deepEqual(seen, []);
  });

  it("escapes are the guest's business (passed as sent); absolute-form arrives as a plain path", async () => {
    for (const t of ['/sandboxes/%ZZ', '/v1/sandboxes/%E0%A4%A'])
      assert.equal((await send(t, 'sbx-good')).status, 404, t);
    assert.equal((await send('http://elsewhere.example/health', 'sbx-good')).status, 204);
    assert.deepEqual(seen, ['GET /sandboxes/%ZZ', 'GET /v1/sandboxes/%E0%A4%A', 'GET /health']);
    const unknown = await send('/sandboxes/%ZZ', 'sbx-nope');
    assert.equal(unknown.status, 502, 'an unknown sandbox is 502, as in E2B');
    const noHeader = await send('/sandboxes/%ZZ');
    assert.equal(noHeader.status, 400);
  });

  it('a guest answering what cannot be passed on gives 502; the proxy keeps serving', async () => {
    const r = await send('/health', 'sbx-broken');
    assert.equal(r.status, 502);
    const b = JSON.parse(r.body) as { code: number; message: string; sandboxId: string };
    assert.equal(b.code, 502);
    assert.equal(b.sandboxId, 'sbx-broken');
    assert.equal((await send('/health', 'sbx-good')).status, 204);
  });

  it('a client that hangs up before the guest answers: upstream closed, agent kept, no error logged', async () => {
    const n0 = cap.lines.length;
    const got = new Promise<void>((r) => (slowGotRequest = r));
    const c = await openIdle({ port });
    c.write(
      'POST /process.Process/Start HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: sbx-slow\r\nContent-Length: 0\r\n\r\n',
    );
    await got;
    c.destroy();
    await slowClosed;
    assert.deepEqual(
      forgotten.filter((x) => x === 'sbx-slow'),
      [],
      'the agent address is not dropped',
    );
    assert.deepEqual(
      cap.lines.slice(n0).filter((l) => (l['level'] as number) >= 40),
      [],
      'nothing logged above info',
    );
  });
});

describe('envd proxy: a guest that answers before the body is sent, then closes', () => {
  let guest: Server;
  let proxy: EnvdProxy;
  let server: Server;
  let port: number;
  before(async () => {
    // As an agent refusing an upload for space: 507 at once, the body unread; then its socket
    // goes (a reset, the body still arriving) once the answer has surely reached the proxy.
    guest = createHttpServer((req, res) => {
      res.writeHead(507, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 507, message: 'not enough disk space' }));
      res.on('finish', () => setTimeout(() => req.socket.destroy(), 200));
    });
    await new Promise<void>((r) => guest.listen(0, '127.0.0.1', r));
    const baseUrl = `http://127.0.0.1:${(guest.address() as AddressInfo).port}`;
    const svc = {
      get: (id: string) => ({ id, state: 'running', autoResume: false }),
      agent: () => Promise.resolve({ baseUrl }),
      list: () => ({ items: [], next: undefined }),
      forgetAgent: () => undefined,
    } as unknown as SandboxService;
    proxy = createEnvdProxy({ svc, log: captureLog().log });
    server = createHttpServer(proxy.handle);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    proxy.close();
    for (const s of [server, guest]) {
      s.closeAllConnections();
      s.close();
    }
  });

  it('the client gets the whole answer, and its connection ends without a reset', async () => {
    const chunk = Buffer.alloc(64 * 1024);
    let sent = 0;
    const got = await new Promise<{ status: number; body: string; error?: string }>((resolve, reject) => {
      let status = 0;
      let body = '';
      const req = httpRequest({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/files?path=/tmp/huge.bin',
        headers: { 'e2b-sandbox-id': 'sbx-upload', 'content-length': String(256 * 2 ** 20) },
      });
      req.on('response', (res) => {
        status = res.statusCode ?? 0;
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
      });
      // 256 MiB, written as fast as the proxy takes it, after the guest has gone too.
      const pump = (): void => {
        while (sent < 256 * 2 ** 20) {
          sent += chunk.length;
          if (!req.write(chunk)) return;
        }
        req.end();
      };
      req.on('drain', pump);
      req.on('error', (e: NodeJS.ErrnoException) => {
        resolve({ status, body, error: e.code ?? e.message });
      });
      req.on('close', () => {
        resolve({ status, body });
      });
      setTimeout(() => {
        reject(new Error('no end in 20 s'));
      }, 20_000).unref();
      pump();
    });
    assert.equal(got.error, undefined, `the client's connection was reset (${got.error})`);
    assert.equal(got.status, 507);
    assert.deepEqual(JSON.parse(got.body), { code: 507, message: 'not enough disk space' });
  });
});
