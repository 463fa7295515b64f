/**
 * The hostile-input suite (issue 10): a real kilnd (startKilnd, its own state dir, ports 0, no VM)
 * gets the fixed corpus and over 10,000 seeded random malformed requests as raw bytes on its three
 * listeners (the unix socket, the E2B API, the envd proxy). Afterwards kilnd is alive and serving,
 * no answer was a 5xx except the envd proxy's documented 502 for a sandbox it does not know, and
 * nothing was logged as an error. Then: 300 half-sent request heads are dropped by the head
 * deadline (short, through KilndOpts), and the API still answers.
 *
 * The same input through the envd proxy into a running guest, and 5,000 idle connections with a
 * sandbox alive, are test/integration/hostile-vm.test.ts (real VM, under the VM lock).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { corpus, fire, type HostileRequest, type Listener } from '../../test/helpers/hostile-corpus.ts';
import { generate, prng } from '../../test/helpers/hostile-generator.ts';
import { captureLog } from '../../test/helpers/log-capture.ts';
import { openIdle, rawRequest, type RawTarget } from '../../test/helpers/raw-http.ts';
import { startKilnd, type Kilnd } from './kilnd.ts';

const SEED = Number(process.env['KILN_HOSTILE_SEED'] ?? 20261201);
const PER_LISTENER = 3400;

const connections = (s: Server): Promise<number> =>
  new Promise((resolve, reject) => {
    s.getConnections((e, n) => {
      if (e) reject(e);
      else resolve(n);
    });
  });

describe('hostile input against a real kilnd (no VM)', { timeout: 120_000 }, () => {
  let state: string;
  let k: Kilnd;
  let apiKey: string;
  let targets: Record<Listener, RawTarget>;
  const cap = captureLog();

  before(async () => {
    state = await mkdtemp(join(tmpdir(), 'kiln-hostile-'));
    // A cache dir that cannot be created: if a request ever started an image build, it would
    // fail at once (and show as a 5xx) instead of building for minutes.
    await writeFile(join(state, 'not-a-dir'), '');
    k = await startKilnd({
      stateDir: join(state, 'state'),
      cacheDir: join(state, 'not-a-dir', 'cache'),
      e2bApiPort: 0,
      e2bSandboxPort: 0,
      log: cap.log,
      listeners: {
        native: { headersTimeoutMs: 1500 },
        e2bApi: { headersTimeoutMs: 1500, requestTimeoutMs: 3000 },
        envdProxy: { headersTimeoutMs: 1500 },
      },
    });
    apiKey = k.keys.create('hostile').key;
    targets = {
      native: { path: k.socketPath },
      e2bApi: { port: Number(new URL(k.e2bApiUrl).port) },
      envdProxy: { port: Number(new URL(k.e2bSandboxUrl).port) },
    };
  });
  after(async () => {
    await k.close();
    await rm(state, { recursive: true, force: true });
  });

  /** The API answers a normal request on every listener. */
  const stillServing = async (): Promise<void> => {
    const health = await rawRequest(targets.native, 'GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(health.kind === 'response' && health.res.status, 200, JSON.stringify(health));
    const list = await rawRequest(
      targets.e2bApi,
      `GET /v2/sandboxes HTTP/1.1\r\nHost: x\r\nX-API-KEY: ${apiKey}\r\n\r\n`,
    );
    assert.deepEqual(
      list.kind === 'response' && [list.res.status, list.res.body],
      [200, '[]'],
      JSON.stringify(list),
    );
    const proxied = await rawRequest(
      targets.envdProxy,
      'GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: sbx-none\r\n\r\n',
    );
    assert.equal(proxied.kind === 'response' && proxied.res.status, 502, JSON.stringify(proxied));
  };

  it("the corpus and 10,000+ seeded random requests: no 5xx but the proxy's 502, kilnd serving, no error logged", async (t) => {
    const listeners: Listener[] = ['native', 'e2bApi', 'envdProxy'];
    const r = prng(SEED);
    const reqs: HostileRequest[] = listeners.flatMap((l) => corpus(l, apiKey, undefined));
    for (let i = 0; i < PER_LISTENER; i++)
      for (const l of listeners) reqs.push(generate(r, l, apiKey, undefined, `seed ${SEED} #${i} ${l}`));
    assert.ok(reqs.length >= 10_000, `${reqs.length} requests`);
    const t0 = performance.now();
    const { tally, bad } = await fire(reqs, targets, 48);
    t.diagnostic(`${reqs.length} requests in ${Math.round(performance.now() - t0)} ms (seed ${SEED})`);
    for (const l of listeners) t.diagnostic(`${l}: ${JSON.stringify(tally[l])}`);
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} bad answers; the first 20 shown`);
    // Most requests were answered (not just dropped): the suite exercises the handlers.
    for (const l of listeners) {
      const answered = Object.entries(tally[l])
        .filter(([kind]) => /^\d+$/.test(kind))
        .reduce((a, [, n]) => a + n, 0);
      assert.ok(answered > PER_LISTENER * 0.5, `${l}: only ${answered} answers`);
    }
    await stillServing();
    const errors = cap.lines.filter((l) => (l['level'] as number) >= 50);
    assert.deepEqual(errors, [], 'nothing logged as an error');
  });

  it('300 half-sent request heads are dropped by the head deadline; the API answers meanwhile and after', async () => {
    const port = (targets.e2bApi as { port: number }).port;
    const socks: Socket[] = [];
    for (let i = 0; i < 300; i++) {
      const s = await openIdle({ port });
      s.write(`POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\nX-API-KEY: ${apiKey}\r\nX-Slow-${i}: `);
      socks.push(s);
    }
    assert.ok((await connections(k.listeners.e2bApi)) >= 300);
    const t0 = Date.now();
    // Served while the 300 wait.
    await stillServing();
    const heard: string[] = [];
    await Promise.all(
      socks.map(
        (s) =>
          new Promise<void>((resolve) => {
            let got = '';
            s.on('data', (d: Buffer) => (got += d.toString('latin1')));
            s.on('error', () => undefined);
            s.once('close', () => {
              heard.push(got.split('\r\n')[0] ?? '');
              resolve();
            });
          }),
      ),
    );
    const ms = Date.now() - t0;
    assert.ok(ms < 6000, `all 300 dropped within ${ms} ms (deadline 1500 ms)`);
    assert.equal(heard.filter((l) => l === 'HTTP/1.1 408 Request Timeout').length, 300);
    assert.equal(await connections(k.listeners.e2bApi), 0);
    await stillServing();
  });

  it('concurrent first calls of POST /v1/e2b/env (found by this suite) all get the one kept key', async () => {
    await rm(join(state, 'state', 'e2b-env.key'), { force: true });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        rawRequest(targets.native, 'POST /v1/e2b/env HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'),
      ),
    );
    const keys = answers.map((a) => {
      assert.equal(a.kind === 'response' && a.res.status, 200, JSON.stringify(a));
      return a.kind === 'response' ? (JSON.parse(a.res.body) as { apiKey: string }).apiKey : '';
    });
    assert.equal(new Set(keys).size, 1);
  });

  it('the listeners got caps sized from the descriptor limit', () => {
    const p = k.limits;
    assert.ok(p.nofile > 0);
    const used = p.native.maxConnections + p.e2bApi.maxConnections + 2 * p.envdProxy.maxConnections;
    assert.ok(used + p.reserve <= p.nofile);
    assert.equal(k.listeners.e2bApi.maxConnections, p.e2bApi.maxConnections);
    assert.equal(k.listeners.envdProxy.maxConnections, p.envdProxy.maxConnections);
    assert.equal(k.listeners.native.maxConnections, p.native.maxConnections);
    assert.equal(k.listeners.e2bApi.headersTimeout, 1500);
    assert.equal((k.listeners.e2bApi.address() as AddressInfo).address, '127.0.0.1');
  });
});
