/**
 * The guest agent in-process on the host, driven by the real `e2b` SDK (through a stub control
 * plane that only hands out the agent's address and token). Runs as root here; the same suite
 * runs inside a real guest in test/integration/agent-vm.test.ts. Then the bootstrap lock: an
 * agent that holds only its bootstrap token's hash answers nothing but /health to anyone else.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Sandbox } from 'e2b';
import { envdSuite } from '../../test/envd/envd.suite.ts';
import { until } from '../../test/envd/helpers.ts';
import { connectE2b } from '../../test/helpers/e2b-stub.ts';
import { fileSignature, tokenSha256 } from '../core/envd-auth.ts';
import { createAgent, type Agent } from './agent.ts';

envdSuite('agent in-process (host, root)', async () => {
  const bootstrap = 'boot-' + Math.random().toString(36).slice(2);
  // The PTY server's socket directory (in a guest, /run/kiln-agent).
  const run = await mkdtemp(join(tmpdir(), 'kiln-agent-run-'));
  const agent = createAgent({
    defaultUser: 'root',
    log: () => undefined,
    bootstrapTokenSha256: tokenSha256(bootstrap),
    ptyDir: run,
  });
  // As in a guest: the PTY server is up before the agent listens (the suite's PTYs use it).
  await agent.ready;
  await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
  const agentUrl = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
  const accessToken = 'tok-' + Math.random().toString(36).slice(2);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-agent-'));
  // Root's login shells read $HOME's profile: not the host's (its rc files may take global locks).
  const { sandbox, close } = await connectE2b(
    agentUrl,
    { accessToken, envVars: { KILN_INIT_VAR: 'from-init', HOME: dir } },
    bootstrap,
  );
  return {
    sandbox,
    agentUrl,
    accessToken,
    defaultUser: 'root',
    dir,
    otherUser: { name: 'nobody' },
    close: async () => {
      await agent.close();
      close();
      await rm(dir, { recursive: true, force: true });
      await rm(run, { recursive: true, force: true });
    },
  };
});

/** The parent of `pid` (from /proc), or undefined when it is gone. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

describe("the agent's PTYs: the persistent server, the one-shot helper when it is gone", () => {
  let agent: Agent;
  let sbx: Sandbox;
  let closeSdk: () => void;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-agent-pty-'));
    agent = createAgent({ defaultUser: 'root', log: () => undefined, ptyDir: join(dir, 'run') });
    await agent.ready;
    await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
    ({ sandbox: sbx, close: closeSdk } = await connectE2b(url, {
      accessToken: 'tok-pty',
      envVars: { HOME: dir },
    }));
  });
  after(async () => {
    await agent.close();
    closeSdk();
    await rm(dir, { recursive: true, force: true });
  });

  /** A login shell through the SDK (`check` sees its pid): says `word` and its size, then is killed. */
  const shell = async (word: string, check: (pid: number) => void): Promise<void> => {
    let out = '';
    const h = await sbx.pty.create({
      cols: 90,
      rows: 30,
      onData: (d) => void (out += Buffer.from(d).toString()),
    });
    check(h.pid);
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode(`echo ${word}-$((6 * 7)); stty size\n`));
    await until(() => (out.includes(`${word}-42`) && out.includes('30 90')) || undefined);
    assert.equal(await sbx.pty.kill(h.pid), true);
    await h.wait().catch(() => undefined);
  };

  it('pty.create goes through the server; a dead server falls back, then comes back', async () => {
    const first = agent.ptys?.pid;
    assert.ok(first, 'the server runs');
    await shell('server', (pid) => {
      assert.equal(parentOf(parentOf(pid) ?? 0), first, 'shell -> handler -> server');
    });
    process.kill(first, 'SIGKILL');
    await until(() => agent.ptys?.pid === undefined || undefined);
    await shell('helper', (pid) => {
      assert.equal(parentOf(pid), process.pid, 'the one-shot helper, started by the agent');
    });
    await agent.ptys?.whenStarted();
    const again = agent.ptys?.pid;
    assert.ok(again && again !== first, 'a new server');
    await shell('again', (pid) => {
      assert.equal(parentOf(parentOf(pid) ?? 0), again, 'through the new server');
    });
  });
});

describe('an agent holding only its bootstrap token', () => {
  const BOOT = 'bootstrap-secret-0123456789abcdef';
  let agent: Agent;
  let base: string;
  let dir: string;
  before(async () => {
    agent = createAgent({
      defaultUser: 'root',
      log: () => undefined,
      bootstrapTokenSha256: tokenSha256(BOOT),
    });
    await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
    dir = await mkdtemp(join(tmpdir(), 'kiln-boot-'));
  });
  after(async () => {
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  const json = { 'content-type': 'application/json' };
  /** Every route but /health, as a stranger would try them (with `token` if given). */
  const attempts = (token?: string): [string, () => Promise<Response>][] => {
    const h = (extra: Record<string, string> = {}): Record<string, string> => ({
      ...extra,
      ...(token === undefined ? {} : { 'x-access-token': token }),
    });
    const rpc = (path: string, body: unknown): Promise<Response> =>
      fetch(`${base}${path}`, { method: 'POST', headers: h(json), body: JSON.stringify(body) });
    const target = join(dir, 'made-by-stranger');
    const sig = fileSignature(target, 'write', 'root', BOOT);
    return [
      ['POST /init', () => rpc('/init', { accessToken: 'stolen', envVars: { A: 'b' } })],
      ['GET /envs', () => fetch(`${base}/envs`, { headers: h() })],
      ['GET /metrics', () => fetch(`${base}/metrics`, { headers: h() })],
      ['GET /files', () => fetch(`${base}/files?path=/etc/hostname`, { headers: h() })],
      [
        'POST /files',
        () =>
          fetch(`${base}/files?path=${encodeURIComponent(target)}`, {
            method: 'POST',
            headers: h({ 'content-type': 'application/octet-stream' }),
            body: 'x',
          }),
      ],
      [
        'POST /files (signed with the bootstrap token)',
        () =>
          fetch(`${base}/files?path=${encodeURIComponent(target)}&username=root&signature=${sig}`, {
            method: 'POST',
            headers: { 'content-type': 'application/octet-stream' },
            body: 'x',
          }),
      ],
      ['Filesystem.MakeDir', () => rpc('/filesystem.Filesystem/MakeDir', { path: target })],
      [
        'Process.Start',
        () =>
          rpc('/process.Process/Start', {
            process: { cmd: '/bin/sh', args: ['-c', `touch ${target}`] },
          }),
      ],
      ['Process.List', () => rpc('/process.Process/List', {})],
      ['GET /nope', () => fetch(`${base}/nope`, { headers: h() })],
    ];
  };

  it('answers /health and refuses everything else, with no token or a wrong one, changing nothing', async () => {
    assert.equal((await fetch(`${base}/health`)).status, 204);
    for (const token of [undefined, '', 'wrong', tokenSha256(BOOT)]) {
      for (const [what, go] of attempts(token)) {
        const res = await go();
        assert.equal(res.status, 401, `${what} with token ${String(token)}: ${await res.text()}`);
        assert.equal(res.headers.get('connection'), 'close', `${what}: a refusal closes the connection`);
      }
    }
    assert.equal(existsSync(join(dir, 'made-by-stranger')), false, 'nothing was created');
    assert.equal(agent.state.accessToken, undefined, 'no /init took effect');
    assert.deepEqual(agent.state.envVars, {});
  });

  it('an /init presenting the bootstrap token without a new token keeps it locked', async () => {
    const r = await fetch(`${base}/init`, {
      method: 'POST',
      headers: { ...json, 'x-access-token': BOOT },
      body: JSON.stringify({ envVars: { A: '1' } }),
    });
    assert.equal(r.status, 204);
    assert.equal((await fetch(`${base}/envs`)).status, 401, 'still needs a token');
    assert.equal((await fetch(`${base}/envs`, { headers: { 'x-access-token': BOOT } })).status, 200);
  });

  it("kilnd's /init presents the bootstrap token and replaces it; the bootstrap token then stops working", async () => {
    const r = await fetch(`${base}/init`, {
      method: 'POST',
      headers: { ...json, 'x-access-token': BOOT },
      body: JSON.stringify({ accessToken: 'sandbox-token', envVars: { A: '2' } }),
    });
    assert.equal(r.status, 204);
    const envs = await fetch(`${base}/envs`, { headers: { 'x-access-token': 'sandbox-token' } });
    assert.deepEqual(await envs.json(), { A: '2' });
    for (const [what, go] of attempts(BOOT))
      assert.equal((await go()).status, 401, `${what} with the old bootstrap token`);
    // An /init without a token never unlocks an agent that holds one.
    const again = await fetch(`${base}/init`, {
      method: 'POST',
      headers: { ...json, 'x-access-token': 'sandbox-token' },
      body: JSON.stringify({ accessToken: '' }),
    });
    assert.equal(again.status, 204);
    assert.equal((await fetch(`${base}/envs`)).status, 401);
    assert.equal(agent.state.accessToken, 'sandbox-token');
  });
});
