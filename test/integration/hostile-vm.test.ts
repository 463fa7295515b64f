/**
 * Hostile input and idle connections with a real sandbox (issue 10), against kilnd started the
 * way users start it (the CLI, detached, its own state dir, ports 0):
 *
 * - the hostile corpus and seeded random requests through the envd proxy, addressed to a running
 *   sandbox (some with its real access token), so the forwarding paths and the guest agent get
 *   them: no 5xx but the proxy's documented 502s, and the sandbox still runs and answers;
 * - 5,000 idle connections to the E2B API (opened with bounded concurrency): kilnd keeps serving
 *   (the API, exec, the envd proxy), holds well under its descriptor limit, and the sandbox
 *   stays alive and tracked (its QEMU runs, nothing is marked dead, nothing logged as an error).
 *
 * Boots VMs: run under the VM lock (flock /work/.vm.lock node --test <this file>).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { planListeners } from '../../src/api/limits.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import { kilnSync, ownQemus, parseE2bEnv, removeStateDir, type CliResult } from '../helpers/kilnd.ts';
import { corpus, fire, type HostileRequest } from '../helpers/hostile-corpus.ts';
import { generate, prng } from '../helpers/hostile-generator.ts';
import { openIdle, pool, rawRequest, type RawTarget } from '../helpers/raw-http.ts';

const SEED = Number(process.env['KILN_HOSTILE_SEED'] ?? 20261202);
const IDLE = 5000;

describe('hostile input and idle connections with a real sandbox', { timeout: 900_000 }, () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  let apiUrl: string;
  let apiKey: string;
  let proxyPort: number;
  let apiPort: number;
  let client: KilnClient;
  let sandboxId: string;
  let token: string;
  const kiln = (...args: string[]): CliResult => kilnSync(env, ...args);
  const qemus = (): string[] => ownQemus(state);
  const kilndPid = (): number => Number(readFileSync(`${state}/kilnd.pid`, 'utf8').trim());
  /** kilnd's log lines at error level or above, and any sandbox marked dead. */
  const logTrouble = (): string[] =>
    readFileSync(`${state}/kilnd.log`, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .filter((l) => {
        const o = JSON.parse(l) as { level?: number; msg?: string };
        return (o.level ?? 0) >= 50 || /vm exited|marked dead/.test(o.msg ?? '');
      });
  const api = async (
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> => {
    const r = await fetch(apiUrl + path, {
      method,
      headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(600_000),
    });
    const text = await r.text();
    return { status: r.status, json: text ? (JSON.parse(text) as unknown) : undefined };
  };
  /** The sandbox runs and answers: E2B API state, a command through the native API, the agent through the proxy. */
  const sandboxServes = async (): Promise<void> => {
    const info = await api('GET', `/sandboxes/${sandboxId}`);
    assert.equal(info.status, 200);
    assert.equal((info.json as { state: string }).state, 'running');
    let out = '';
    const r = await client.exec(sandboxId, 'echo $((6*7))', { onStdout: (b) => (out += b.toString()) });
    assert.deepEqual([r.exitCode, out], [0, '42\n']);
    const health = await rawRequest(
      { port: proxyPort },
      `GET /health HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: ${sandboxId}\r\n\r\n`,
      { timeoutMs: 30_000 },
    );
    assert.equal(health.kind === 'response' && health.res.status, 204, JSON.stringify(health));
    assert.equal(qemus().length, 1, "the sandbox's QEMU runs");
  };

  before(async () => {
    state = await mkdtemp('/tmp/kiln-hostile-vm-');
    env = { ...process.env, KILN_STATE_DIR: state, KILN_E2B_API_PORT: '0', KILN_E2B_SANDBOX_PORT: '0' };
    const r = kiln('e2b', 'env');
    assert.equal(r.status, 0, r.stderr);
    const e = parseE2bEnv(r.stdout);
    apiUrl = e.apiUrl;
    proxyPort = Number(new URL(e.sandboxUrl).port);
    apiPort = Number(new URL(apiUrl).port);
    apiKey = e.apiKey;
    client = new KilnClient({ socketPath: `${state}/kilnd.sock` });
    // The first create builds the base template (boot + snapshot).
    const c = await api('POST', '/v2/sandboxes', { templateID: 'base', timeout: 1800 });
    assert.equal(c.status, 201, JSON.stringify(c.json));
    ({ sandboxID: sandboxId, envdAccessToken: token } = c.json as {
      sandboxID: string;
      envdAccessToken: string;
    });
  });
  after(() => removeStateDir(env, state));

  it('hostile requests through the envd proxy into a running guest: no 5xx but documented 502s; the sandbox still serves', async (t) => {
    const r = prng(SEED);
    const reqs: HostileRequest[] = corpus('envdProxy', apiKey, sandboxId);
    for (let i = 0; i < 1500; i++)
      reqs.push(generate(r, 'envdProxy', apiKey, sandboxId, `seed ${SEED} #${i}`, token));
    const targets: Record<'native' | 'e2bApi' | 'envdProxy', RawTarget> = {
      native: { path: `${state}/kilnd.sock` },
      e2bApi: { port: apiPort },
      envdProxy: { port: proxyPort },
    };
    const t0 = performance.now();
    const { tally, bad } = await fire(reqs, targets, 16);
    t.diagnostic(
      `${reqs.length} requests in ${Math.round(performance.now() - t0)} ms: ${JSON.stringify(tally.envdProxy)}`,
    );
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} bad answers; the first 20 shown`);
    await sandboxServes();
    assert.deepEqual(logTrouble(), []);
  });

  it(`${IDLE} idle connections to the E2B API: kilnd serves, stays under its descriptor limit, the sandbox lives`, async (t) => {
    const pid = kilndPid();
    const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
    const nofile = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
    const idle: Socket[] = [];
    let refused = 0;
    await pool(
      Array.from({ length: IDLE }, (_, i) => i),
      200,
      async () => {
        try {
          const s = await openIdle({ port: apiPort });
          s.on('error', () => undefined);
          idle.push(s);
        } catch {
          refused++;
        }
      },
    );
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    const open = idle.filter((s) => !s.destroyed).length;
    t.diagnostic(
      `${IDLE} opened (${refused} refused at connect), ${open} still open; kilnd holds ${fds} of ${nofile} fds`,
    );
    // The E2B API's cap bounds what idle clients cost (without it: one descriptor per client).
    const cap = planListeners(nofile).e2bApi.maxConnections;
    assert.ok(fds < cap + 300, `kilnd holds ${fds} descriptors; the E2B API's cap is ${cap}`);
    assert.ok(fds < nofile * 0.75, `kilnd holds ${fds} descriptors of ${nofile}`);
    // Served meanwhile: the API, exec, the proxy; twice, so the liveness watcher runs under the load.
    await sandboxServes();
    await sandboxServes();
    for (const s of idle) s.destroy();
    await sandboxServes();
    const listed = await api('GET', '/v2/sandboxes');
    assert.deepEqual(
      (listed.json as { sandboxID: string; state: string }[]).map((s) => [s.sandboxID, s.state]),
      [[sandboxId, 'running']],
    );
    assert.equal(kilndPid(), pid, 'the same kilnd');
    assert.deepEqual(logTrouble(), []);
  });
});
