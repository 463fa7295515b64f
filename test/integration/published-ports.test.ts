/**
 * Published ports through the unmodified `e2b` SDK and a real kilnd with real QEMU guests: a
 * `python3 -m http.server` in the sandbox fetched with curl at `sandbox.getHost(8000)` (a
 * `*.localhost` name, no DNS set-up), the same through the `E2b-Sandbox-Id`/`E2b-Sandbox-Port`
 * headers, a WebSocket echo through the proxy, and a paused autoResume sandbox woken by a request
 * to one of its ports; headless Chromium opens `getHost(8000)` and the page's script echoes over a
 * WebSocket to another guest port by the same host form. Run under the VM lock:
 * `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Sandbox } from 'e2b';
import { launchChromium } from '../helpers/chromium.ts';
import { kilnSync, removeStateDir, type CliResult, useKilnE2bEnv } from '../helpers/kilnd.ts';

const run = promisify(execFile);

/** A minimal RFC 6455 echo server for the guest (its image has python3 and no packages). */
const WS_ECHO = String.raw`
import base64, hashlib, socket, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    head, buf = data.split(b"\r\n\r\n", 1)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    def take(n):
        nonlocal buf
        while len(buf) < n:
            chunk = c.recv(4096)
            if not chunk:
                raise EOFError
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out
    while True:
        b0, b1 = take(2)
        op, n = b0 & 15, b1 & 127
        if n == 126:
            n = int.from_bytes(take(2), "big")
        elif n == 127:
            n = int.from_bytes(take(8), "big")
        mask = take(4) if b1 & 128 else b"\0\0\0\0"
        payload = bytes(x ^ mask[i % 4] for i, x in enumerate(take(n)))
        if op == 8:
            c.sendall(b"\x88\x00")
            return
        if op == 1:
            reply = b"echo: " + payload
            c.sendall(bytes([129]) + (bytes([len(reply)]) if len(reply) < 126 else bytes([126]) + len(reply).to_bytes(2, "big")) + reply)
def safe(c):
    try:
        serve(c)
    except Exception:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765))
s.listen()
while True:
    conn, _ = s.accept()
    threading.Thread(target=safe, args=(conn,), daemon=True).start()
`;

let state: string;
let env: NodeJS.ProcessEnv;
const kiln = (...args: string[]): CliResult => kilnSync(env, ...args);
const sandboxUrl = (): string => process.env['E2B_SANDBOX_URL'] ?? '';

/** `curl` from the host: status and body (curl resolves `*.localhost` to loopback itself). */
async function curl(url: string, ...args: string[]): Promise<{ status: number; body: string }> {
  const r = await run('curl', ['-sS', '--max-time', '60', '-o', '-', '-w', '\n%{http_code}', ...args, url]);
  const i = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

/** Polls `url` until it answers 200 (the guest server is up): the answer is the signal. */
async function until200(url: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await curl(url);
    if (r.status === 200) return r.body;
    assert.ok(Date.now() < deadline, `${url} never answered 200; last: ${r.status} ${r.body}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** A WebSocket handshake to `host` with curl, repeated until the guest's 101 comes back. */
async function untilUpgraded(host: string, timeoutMs = 60_000): Promise<{ status: number; body: string }> {
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hs = await curl(
      `http://${host}/`,
      '-i',
      '--max-time',
      '5',
      '-H',
      'Connection: Upgrade',
      '-H',
      'Upgrade: websocket',
      '-H',
      'Sec-WebSocket-Version: 13',
      '-H',
      `Sec-WebSocket-Key: ${key}`,
    ).catch((e: unknown) => ({ status: 0, body: (e as { stdout?: string }).stdout ?? '' }));
    if (/^HTTP\/1\.1 101/.test(hs.body)) return hs;
    assert.ok(Date.now() < deadline, `no 101 from the guest: ${hs.body}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** The page Chromium opens: its own script opens a WebSocket to the echo port by the Host form. */
const PAGE = `<!doctype html><title>kiln</title>
<p id="text">served by the guest</p><p id="ws">pending</p>
<script>
const ws = new WebSocket('ws://' + location.host.replace(/^8000-/, '8765-') + '/');
ws.onopen = () => ws.send('from chromium');
ws.onmessage = (ev) => { document.getElementById('ws').textContent = ev.data; ws.close(); };
ws.onerror = () => { document.getElementById('ws').textContent = 'websocket error'; };
</script>`;

describe('published ports through the e2b SDK (real guests)', { timeout: 1_200_000 }, () => {
  let sbx: Sandbox;
  let proxyPort: string;

  before(async () => {
    state = await mkdtemp('/tmp/kiln-ports-');
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    delete process.env['E2B_DOMAIN'];
    delete process.env['E2B_DEBUG'];
    const ports = useKilnE2bEnv(env);
    proxyPort = ports.proxyPort;
    sbx = await Sandbox.create('base', {
      lifecycle: { onTimeout: 'pause', autoResume: true },
      requestTimeoutMs: 600_000,
    });
    await sbx.files.write('/home/user/www/hello.txt', 'hello from the guest\n');
    const server = await sbx.commands.run('python3 -m http.server 8000 --directory /home/user/www', {
      background: true,
    });
    // The server runs on; its output stream (envd traffic, which would wake a paused sandbox) ends.
    await server.disconnect();
    await sbx.files.write('/home/user/ws_echo.py', WS_ECHO);
    await (await sbx.commands.run('python3 /home/user/ws_echo.py', { background: true })).disconnect();
  });
  after(() => removeStateDir(env, state));

  it('getHost(8000) is {port}-{id}.localhost:<proxy port>; curl reaches the guest server there', async () => {
    const host = sbx.getHost(8000);
    assert.equal(host, `8000-${sbx.sandboxId}.localhost:${proxyPort}`);
    assert.equal(await until200(`http://${host}/hello.txt`), 'hello from the guest\n');
    const listing = await curl(`http://${host}/`);
    assert.equal(listing.status, 200);
    assert.match(listing.body, /hello\.txt/);
    // The agent's port by the same form is the envd routes.
    assert.equal((await curl(`http://${sbx.getHost(49983)}/health`)).status, 204);
    const cli = kiln('sandbox', 'url', sbx.sandboxId, '8000');
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal(cli.stdout, `http://${host}/\n`);
  });

  it('the E2b-Sandbox-Id / E2b-Sandbox-Port headers route to the port; a closed port is 502', async () => {
    const headers = { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8000' };
    const r = await fetch(`${sandboxUrl()}/hello.txt`, { headers });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'hello from the guest\n');
    const closed = await fetch(`${sandboxUrl()}/`, { headers: { ...headers, 'e2b-sandbox-port': '8001' } });
    assert.equal(closed.status, 502);
    assert.deepEqual(await closed.json(), {
      sandboxId: sbx.sandboxId,
      message: 'The sandbox is running but port is not open',
      port: 8001,
      code: 502,
    });
  });

  it('a WebSocket echo in the guest answers through the proxy (headers and Host form)', async () => {
    // The handshake by Host form, with curl: the guest's 101 comes back through the proxy.
    const hs = await untilUpgraded(sbx.getHost(8765));
    assert.match(hs.body, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
    // Node's WebSocket (it does not resolve *.localhost names): by the routing headers.
    const ws = new WebSocket(`${sandboxUrl().replace(/^http/, 'ws')}/`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8765' },
    });
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onerror = () => {
        reject(new Error('websocket failed'));
      };
      ws.onopen = () => {
        ws.send('ping 1');
      };
      ws.onmessage = (ev) => {
        got.push(String(ev.data));
        if (got.length === 1) ws.send('x'.repeat(300));
        else ws.close();
      };
      ws.onclose = () => {
        resolve();
      };
    });
    assert.deepEqual(got, ['echo: ping 1', `echo: ${'x'.repeat(300)}`]);
  });

  it("headless Chromium opens getHost(8000); the page's own WebSocket echoes through the proxy", async () => {
    // After the listing test: from here on, / is this page.
    await sbx.files.write('/home/user/www/index.html', PAGE);
    await untilUpgraded(sbx.getHost(8765)); // the echo server is up
    const browser = await launchChromium();
    try {
      const page = await browser.open(`http://${sbx.getHost(8000)}/`);
      assert.equal(await page.eval<string>('location.host'), sbx.getHost(8000));
      assert.equal(
        await page.eval<string>("document.getElementById('text').textContent"),
        'served by the guest',
      );
      // The page's script sets #ws when the echo (or an error) arrives: wait for that change.
      const echoed = await page.eval<string>(`new Promise((resolve) => {
        const el = document.getElementById('ws');
        const done = () => el.textContent !== 'pending' && (resolve(el.textContent), true);
        if (!done()) new MutationObserver(done).observe(el, { childList: true, characterData: true, subtree: true });
      })`);
      assert.equal(echoed, 'echo: from chromium');
    } finally {
      await browser.close();
    }
  });

  it('a request to a port of a paused autoResume sandbox resumes it', async () => {
    assert.equal(await sbx.pause(), true);
    assert.equal((await sbx.getInfo()).state, 'paused');
    const r = await curl(`http://${sbx.getHost(8000)}/hello.txt`);
    assert.deepEqual(r, { status: 200, body: 'hello from the guest\n' });
    assert.equal((await sbx.getInfo()).state, 'running');
    await sbx.kill();
  });
});
