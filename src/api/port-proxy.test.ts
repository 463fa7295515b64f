/** Published ports through the envd proxy over the fake driver: routing, streaming, WebSocket, access. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import { nullLogger } from '../core/log.ts';
import { createEnvdProxy, type EnvdProxy } from './envd-proxy.ts';
import type { TrafficPolicy } from './port-target.ts';
import { E2bHarness, listen } from './testing/harness.ts';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A request with any Host (fetch cannot set one). */
function call(base: string, path: string, headers: Record<string, string>, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The status of a WebSocket handshake the proxy answers without upgrading (fails if it upgrades). */
function refusedUpgrade(base: string, headers: Record<string, string>): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = request(`${base}/`, { headers: { ...headers, connection: 'Upgrade', upgrade: 'websocket' } });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('upgrade', () => {
      reject(new Error('upgraded'));
    });
    req.on('error', reject);
    req.end();
  });
}

/** One unmasked text frame (server to client), payload < 126 bytes. */
const textFrame = (s: string): Buffer =>
  Buffer.concat([Buffer.from([0x81, Buffer.byteLength(s)]), Buffer.from(s)]);

/** A guest WebSocket server that answers each text frame with "echo: " + it (small frames only). */
function wsEcho(server: Server): void {
  server.on('upgrade', (req, sock: Duplex) => {
    const key = String(req.headers['sec-websocket-key']);
    const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    sock.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nX-Guest-Host: ${req.headers.host ?? ''}\r\n\r\n`,
    );
    sock.on('data', (b: Buffer) => {
      const op = (b[0] ?? 0) & 0x0f;
      const len = (b[1] ?? 0) & 0x7f;
      const mask = b.subarray(2, 6);
      const payload = Buffer.from(b.subarray(6, 6 + len).map((x, i) => x ^ (mask[i % 4] ?? 0)));
      if (op === 8) sock.end(Buffer.from([0x88, 0]));
      else if (op === 1) sock.write(textFrame(`echo: ${payload.toString()}`));
    });
    sock.on('error', () => sock.destroy());
  });
}

describe('envd proxy: published ports (fake driver)', () => {
  let h: E2bHarness;
  let id: string;
  /** What the guest's port 8000 saw last. */
  let seen: { host?: string; url?: string } = {};
  const guest = createServer((req, res) => {
    seen = { host: req.headers.host ?? '', url: req.url ?? '' };
    if (req.url === '/stream') {
      // Echoes each chunk as it comes: a proxy that buffered either way would deadlock the client.
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.flushHeaders();
      req.on('data', (c: Buffer) => res.write(c));
      req.on('end', () => res.end('|done'));
      return;
    }
    res
      .writeHead(200, { 'content-type': 'text/plain', 'x-guest': 'yes' })
      .end(`hi from 8000 ${req.url ?? ''}`);
  });
  wsEcho(guest);

  const mk = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await h.raw('POST', '/v2/sandboxes', { templateID: 'base', ...body });
    const sid = (r.json as { sandboxID: string }).sandboxID;
    h.fx.driver.serveGuestPort(sid, 8000, guest);
    return sid;
  };

  before(async () => {
    h = await E2bHarness.start();
    id = await mk();
  });
  after(() => h.close());

  it("E2B answers domain localhost:<proxy port>, so the SDK's getHost(port) names the proxy", async () => {
    const proxyPort = new URL(h.sandboxUrl).port;
    const created = await h.raw('POST', '/v2/sandboxes', { templateID: 'base' });
    const sid = (created.json as { sandboxID: string; domain: string }).sandboxID;
    assert.equal((created.json as { domain: string }).domain, `localhost:${proxyPort}`);
    const detail = await h.raw('GET', `/sandboxes/${sid}`);
    assert.equal((detail.json as { domain: string }).domain, `localhost:${proxyPort}`);
    const sbx = await Sandbox.connect(sid, h.opts());
    assert.equal(sbx.getHost(8000), `8000-${sid}.localhost:${proxyPort}`);
    // With E2B_SANDBOX_URL set, envd traffic still goes there (the domain changes only getHost).
    assert.equal(await sbx.isRunning(), true, "envd's /health through E2B_SANDBOX_URL");
    await h.svc.kill(sid);
  });

  it('routes by Host {port}-{id}.<domain> and by E2b-Sandbox-Port; the guest sees the client Host', async () => {
    const host = `8000-${id}.localhost:7481`;
    const byHost = await call(h.sandboxUrl, '/a?b=1', { host });
    assert.deepEqual(
      [byHost.status, byHost.body, byHost.headers['x-guest']],
      [200, 'hi from 8000 /a?b=1', 'yes'],
    );
    assert.deepEqual(seen, { host, url: '/a?b=1' });
    const byHeaders = await fetch(`${h.sandboxUrl}/c`, {
      headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '8000' },
    });
    assert.deepEqual([byHeaders.status, await byHeaders.text()], [200, 'hi from 8000 /c']);
    // Port 49983 by the Host form is the envd routes (the fake agent answers /health).
    assert.equal((await call(h.sandboxUrl, '/health', { host: `49983-${id}.localhost` })).status, 204);
  });

  it('streams request and response bodies both ways without buffering', async () => {
    const got = await new Promise<string>((resolve, reject) => {
      const req = request(`${h.sandboxUrl}/stream`, {
        method: 'POST',
        headers: { host: `8000-${id}.localhost`, 'transfer-encoding': 'chunked' },
      });
      req.on('response', (res) => {
        let all = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          all += c;
          // The second chunk goes only once the first came back through both directions.
          if (all === 'one') req.end('two');
        });
        res.on('end', () => {
          resolve(all);
        });
      });
      req.on('error', reject);
      req.write('one');
    });
    assert.equal(got, 'onetwo|done');
  });

  it("a port nothing listens on is E2B's 502; bad ports are 400; unknown sandboxes 502", async () => {
    const closed = await fetch(`${h.sandboxUrl}/`, {
      headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '8001' },
    });
    assert.equal(closed.status, 502);
    assert.deepEqual(await closed.json(), {
      sandboxId: id,
      message: 'The sandbox is running but port is not open',
      port: 8001,
      code: 502,
    });
    const bad = await fetch(`${h.sandboxUrl}/`, {
      headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': 'x' },
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { message: string }).message, /E2b-Sandbox-Port must be a TCP port/);
    const unknown = await call(h.sandboxUrl, '/', { host: '8000-sbx-nope.localhost' });
    assert.equal(unknown.status, 502);
    assert.deepEqual(Object.keys(JSON.parse(unknown.body) as object).sort(), [
      'code',
      'message',
      'sandboxId',
    ]);
  });

  it('WebSocket upgrades reach the guest and frames go both ways; an upgrade to envd is refused', async () => {
    const ws = new WebSocket(`${h.sandboxUrl.replace(/^http/, 'ws')}/ws`, {
      headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '8000' },
    });
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onerror = () => {
        reject(new Error('websocket failed'));
      };
      ws.onopen = () => {
        ws.send('one');
      };
      ws.onmessage = (ev) => {
        got.push(String(ev.data));
        if (got.length === 1) ws.send('two');
        else ws.close();
      };
      ws.onclose = () => {
        resolve();
      };
    });
    assert.deepEqual(got, ['echo: one', 'echo: two']);
    const envd = await refusedUpgrade(h.sandboxUrl, { 'e2b-sandbox-id': id });
    assert.equal(envd, 400);
  });

  it("the proxy's close ends live WebSocket tunnels, so its server can close", async () => {
    const proxy = createEnvdProxy({ svc: h.svc, log: nullLogger });
    const { server, url } = await listen(proxy.handle);
    server.on('upgrade', proxy.upgrade);
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/`, {
      headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': '8000' },
    });
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        resolve();
      };
      ws.onerror = () => {
        reject(new Error('websocket failed'));
      };
    });
    const closed = new Promise<void>((resolve) => {
      ws.onclose = () => {
        resolve();
      };
    });
    const serverClosed = new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
    proxy.close();
    await closed;
    await serverClosed;
  });

  it('a paused autoResume sandbox is resumed by a request to one of its ports', async () => {
    const sid = await mk({ autoPause: true, autoResume: { enabled: true } });
    await h.svc.pause(sid);
    const r = await call(h.sandboxUrl, '/x', { host: `8000-${sid}.localhost` });
    assert.deepEqual([r.status, r.body], [200, 'hi from 8000 /x']);
    assert.equal(h.svc.get(sid).state, 'running');
    await h.svc.kill(sid);
  });

  describe('with a traffic policy (allowPublicTraffic: false)', () => {
    let proxy: EnvdProxy;
    let url: string;
    let server: Server;
    const policies = new Map<string, TrafficPolicy>();
    before(async () => {
      proxy = createEnvdProxy({
        svc: h.svc,
        log: nullLogger,
        traffic: (sid) => policies.get(sid) ?? { allowPublicTraffic: true, token: null },
      });
      ({ server, url } = await listen(proxy.handle));
      server.on('upgrade', proxy.upgrade);
    });
    after(() => {
      server.closeAllConnections();
      server.close();
      proxy.close();
    });

    it("wants the sandbox's token before waking it; the guest sees the masked Host", async () => {
      const sid = await mk({ autoPause: true, autoResume: { enabled: true } });
      policies.set(sid, { allowPublicTraffic: false, token: 'tok-1', maskRequestHost: 'localhost:${PORT}' });
      await h.svc.pause(sid);
      const host = `8000-${sid}.localhost`;
      const missing = await call(url, '/', { host });
      assert.equal(missing.status, 403);
      assert.deepEqual(JSON.parse(missing.body), {
        sandboxId: sid,
        message:
          "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing",
        code: 403,
      });
      const wrong = await call(url, '/', { host, 'e2b-traffic-access-token': 'tok-2' });
      assert.equal(wrong.status, 403);
      assert.match((JSON.parse(wrong.body) as { message: string }).message, /Provided token .* is invalid/);
      assert.equal(h.svc.get(sid).state, 'paused', 'a refused request does not wake it');
      const ok = await call(url, '/y', { host, 'e2b-traffic-access-token': 'tok-1' });
      assert.deepEqual([ok.status, ok.body], [200, 'hi from 8000 /y']);
      assert.equal(seen.host, 'localhost:8000');
      assert.equal(h.svc.get(sid).state, 'running');
      // The envd routes are the agent's business (its access token), not the traffic token's.
      assert.equal((await call(url, '/health', { host: `49983-${sid}.localhost` })).status, 204);
      // An upgrade without the token is refused the same way.
      const ws = await refusedUpgrade(url, { host });
      assert.equal(ws, 403);
      await h.svc.kill(sid);
    });
  });
});
