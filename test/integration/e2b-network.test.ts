/**
 * Sandbox networking through the unmodified `e2b` SDK against a real kilnd (isolated: each
 * sandbox in a network namespace of its own) with real QEMU guests. Two test hosts in namespaces
 * of the test's own, on documentation addresses the always-denied set does not cover, stand in
 * for the internet. Create's `network` rules let a sandbox reach the one it allows and nothing
 * else; `updateNetwork` flips them on the running sandbox; `allowInternetAccess: false` refuses
 * them; kilnd's own ports are refused from inside a guest on every host address, even when the
 * rules name those ranges; `allowPublicTraffic: false` makes a published port need the traffic
 * token (a paused autoResume sandbox is not woken without it); `maskRequestHost` rewrites the Host
 * the guest sees; a bad rule is refused naming it and creates or changes nothing.
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Sandbox } from 'e2b';
import { ownQemus, removeStateDir, useKilnE2bEnv } from '../helpers/kilnd.ts';
import { PROBE, assertRefused, startNetPeer, type NetPeer, type Probe } from '../helpers/net-peer.ts';

const run = promisify(execFile);

/** A guest HTTP server on 8080 that answers with the Host header it got. */
const HOST_ECHO = `
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = (self.headers.get('Host') or '').encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
`;

let state: string;
let env: NodeJS.ProcessEnv;

/** `curl` from the guest: the HTTP status, or 000 when no answer came. */
async function guestCurl(sbx: Sandbox, url: string): Promise<string> {
  const r = await sbx.commands.run(`curl -s -m 5 -o /dev/null -w '%{http_code}' ${url} || true`);
  return r.stdout.trim();
}

/** TCP connection attempts from the guest (test/helpers/net-peer.ts PROBE). */
async function probe(sbx: Sandbox, targets: string[]): Promise<Probe> {
  await sbx.files.write('/tmp/probe.py', PROBE);
  const r = await sbx.commands.run(`python3 /tmp/probe.py ${targets.join(' ')}`);
  return JSON.parse(r.stdout) as Probe;
}

/** Every IPv4 address of this host but loopback (the sandbox slots' gateways among them). */
function hostAddresses(): string[] {
  return execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /inet (\d+\.\d+\.\d+\.\d+)/.exec(l)?.[1] ?? '')
    .filter((a) => a !== '' && !a.startsWith('127.'));
}

describe(
  'sandbox networking through the e2b SDK (real guests, isolated kilnd)',
  { timeout: 1_200_000 },
  () => {
    let peer: NetPeer;
    let other: NetPeer;
    let apiPort: string;
    let proxyPort: string;
    const url = (p: NetPeer): string => `http://${p.addr}:${p.httpPort}/`;

    before(async () => {
      state = await mkdtemp('/tmp/kiln-e2bnet-');
      env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
      delete process.env['E2B_DOMAIN'];
      delete process.env['E2B_DEBUG'];
      peer = await startNetPeer();
      other = await startNetPeer();
      const ports = useKilnE2bEnv(env);
      apiPort = ports.apiPort;
      proxyPort = ports.proxyPort;
      // The first create builds the base template (boot + snapshot): done here, once.
      await (await Sandbox.create({ requestTimeoutMs: 600_000 })).kill();
    });
    after(async () => {
      await removeStateDir(env, state);
      await peer.close();
      await other.close();
    });

    it('denyOut 0.0.0.0/0 + allowOut [peer] reaches that peer only; updateNetwork flips it; allowInternetAccess false refuses both', async () => {
      const sbx = await Sandbox.create({ network: { denyOut: ['0.0.0.0/0'], allowOut: [peer.addr] } });
      assert.equal(await guestCurl(sbx, url(peer)), '200');
      assert.equal(await guestCurl(sbx, url(other)), '000');
      assertRefused(await probe(sbx, [`${other.addr}:${other.httpPort}`]), [
        `${other.addr}:${other.httpPort}`,
      ]);
      await sbx.updateNetwork({ denyOut: ['0.0.0.0/0'], allowOut: [`${other.addr}/32`] });
      assert.equal(await guestCurl(sbx, url(other)), '200');
      assert.equal(await guestCurl(sbx, url(peer)), '000');
      // The static form, on the same sandbox: no lists and no internet.
      await Sandbox.updateNetwork(sbx.sandboxId, { allowInternetAccess: false });
      const targets = [`${peer.addr}:${peer.httpPort}`, `${other.addr}:${other.httpPort}`];
      assertRefused(await probe(sbx, targets), targets);
      await sbx.kill();
    });

    it('allowInternetAccess: false at create refuses the peer; an explicit allowOut opens it alone', async () => {
      const sbx = await Sandbox.create({ allowInternetAccess: false });
      assert.equal((await sbx.getInfo()).allowInternetAccess, false);
      assertRefused(await probe(sbx, [`${peer.addr}:${peer.httpPort}`]), [`${peer.addr}:${peer.httpPort}`]);
      await sbx.updateNetwork({ allowInternetAccess: false, allowOut: [peer.addr] });
      assert.equal(await guestCurl(sbx, url(peer)), '200');
      assert.equal(await guestCurl(sbx, url(other)), '000');
      await sbx.kill();
    });

    it("kilnd's E2B API and envd proxy ports are refused from a guest on every host address, even when allowOut names them", async () => {
      const sbx = await Sandbox.create();
      const kilnd = ['10.0.2.2', ...hostAddresses()].flatMap((a) => [`${a}:${apiPort}`, `${a}:${proxyPort}`]);
      const p = await probe(sbx, [...kilnd, `${peer.addr}:${peer.httpPort}`]);
      assert.equal(p[`${peer.addr}:${peer.httpPort}`]?.[0], 'open', 'internet on by default');
      assertRefused(p, kilnd);
      await sbx.updateNetwork({
        allowOut: ['10.0.0.0/8', '127.0.0.0/8', '198.51.100.0/24', ...hostAddresses().map((a) => `${a}/32`)],
      });
      assertRefused(await probe(sbx, kilnd), kilnd);
      await sbx.kill();
    });

    it('allowPublicTraffic: false: a published port answers 403 without e2b-traffic-access-token, 200 with it', async () => {
      const sbx = await Sandbox.create({
        network: { allowPublicTraffic: false },
        lifecycle: { onTimeout: 'pause', autoResume: true },
      });
      const token = sbx.trafficAccessToken;
      assert.ok(token, 'create returns a traffic access token');
      await sbx.files.write('/home/user/www/hello.txt', 'private\n');
      await (
        await sbx.commands.run('python3 -m http.server 8000 --directory /home/user/www', { background: true })
      ).disconnect();
      const at = `http://${sbx.getHost(8000)}/hello.txt`;
      assert.equal(new URL(at).port, proxyPort);
      // curl resolves *.localhost to loopback itself (Node's fetch does not).
      const get = async (...headers: string[]): Promise<{ status: string; body: string }> => {
        const args = [
          '-s',
          '-m',
          '30',
          '-o',
          '-',
          '-w',
          '\n%{http_code}',
          ...headers.flatMap((h) => ['-H', h]),
          at,
        ];
        const out = (await run('curl', args)).stdout;
        const i = out.lastIndexOf('\n');
        return { status: out.slice(i + 1), body: out.slice(0, i) };
      };
      const withToken = `e2b-traffic-access-token: ${token}`;
      const deadline = Date.now() + 60_000;
      let r = await get(withToken);
      while (r.status !== '200') {
        assert.ok(Date.now() < deadline, `never 200 with the token: ${r.status} ${r.body}`);
        await new Promise((res) => setTimeout(res, 250));
        r = await get(withToken);
      }
      assert.equal(r.body, 'private\n');
      assert.equal((await get()).status, '403');
      assert.equal((await get(`e2b-traffic-access-token: ${token}x`)).status, '403');
      // The routing headers (what @e2b/code-interpreter sends) need it too.
      const routed = { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8000' };
      const sandboxUrl = process.env['E2B_SANDBOX_URL'] ?? '';
      assert.equal((await fetch(`${sandboxUrl}/hello.txt`, { headers: routed })).status, 403);
      const headers = { ...routed, 'e2b-traffic-access-token': token };
      assert.equal((await fetch(`${sandboxUrl}/hello.txt`, { headers })).status, 200);
      // Paused with autoResume: a request without the token is refused and does not wake it.
      assert.equal(await sbx.pause(), true);
      assert.equal((await get()).status, '403');
      assert.equal((await sbx.getInfo()).state, 'paused');
      assert.deepEqual(await get(withToken), { status: '200', body: 'private\n' });
      assert.equal((await sbx.getInfo()).state, 'running');
      await sbx.kill();
    });

    it('maskRequestHost: the guest server sees the masked Host, ${PORT} filled in', async () => {
      const sbx = await Sandbox.create({ network: { maskRequestHost: 'localhost:${PORT}' } });
      await sbx.files.write('/home/user/host_echo.py', HOST_ECHO);
      await (await sbx.commands.run('python3 /home/user/host_echo.py', { background: true })).disconnect();
      const routed = { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8080' };
      const sandboxUrl = process.env['E2B_SANDBOX_URL'] ?? '';
      const deadline = Date.now() + 60_000;
      let r = await fetch(sandboxUrl, { headers: routed });
      while (r.status !== 200) {
        assert.ok(Date.now() < deadline, `never 200: ${r.status} ${await r.text()}`);
        await new Promise((res) => setTimeout(res, 250));
        r = await fetch(sandboxUrl, { headers: routed });
      }
      assert.equal(await r.text(), 'localhost:8080');
      await sbx.kill();
    });

    it('a bad CIDR or domain is refused with 400 naming it: create makes nothing, updateNetwork changes nothing', async () => {
      const before = (await Sandbox.list().nextItems()).map((s) => s.sandboxId).sort();
      const qemus = ownQemus(state).length;
      const names = (re: RegExp) => (e: Error) => {
        assert.match(e.message, re);
        return true;
      };
      await assert.rejects(
        Sandbox.create({ network: { allowOut: ['10.0.0.0/33'] } }),
        names(/^400: network\.allowOut\[0\]: "10\.0\.0\.0\/33" is not a CIDR/),
      );
      await assert.rejects(
        Sandbox.create({ network: { denyOut: ['8.8.8.8', 'bad..name'] } }),
        names(/^400: network\.denyOut\[1\]: "bad\.\.name" is not/),
      );
      assert.deepEqual((await Sandbox.list().nextItems()).map((s) => s.sandboxId).sort(), before);
      assert.equal(ownQemus(state).length, qemus);
      const sbx = await Sandbox.create({ network: { denyOut: ['0.0.0.0/0'], allowOut: [peer.addr] } });
      await assert.rejects(
        sbx.updateNetwork({ denyOut: ['0.0.0.0/0'], allowOut: [other.addr, '10.0.0.0/33'] }),
        names(/^400: .*allowOut\[1\]: "10\.0\.0\.0\/33"/),
      );
      assert.equal(await guestCurl(sbx, url(peer)), '200');
      assert.equal(await guestCurl(sbx, url(other)), '000');
      await sbx.kill();
    });
  },
);
