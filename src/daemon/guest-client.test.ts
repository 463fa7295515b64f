import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createAgent, type Agent } from '../guest/agent.ts';
import { HttpGuestClient } from './guest-client.ts';

// The real agent, in-process (tests may cross layers; the code under test does not).
let agent: Agent;
let baseUrl: string;
before(async () => {
  agent = createAgent({ defaultUser: 'root', log: () => undefined, ptyServer: false });
  await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
});
after(async () => {
  await agent.close();
});

test('health, init with a token, exec with output, exit codes, env and cwd', async () => {
  const anon = new HttpGuestClient({ baseUrl });
  await anon.health();
  await anon.init({
    accessToken: 'secret',
    // Root's login shells read $HOME's profile: not the host's (its rc files may take global locks).
    envVars: { FROM_INIT: 'yes', HOME: tmpdir() },
    timestamp: new Date().toISOString(),
  });
  await assert.rejects(anon.exec('true'), { code: 'guest_agent_error' }, 'the token is now required');
  const c = new HttpGuestClient({ baseUrl, accessToken: 'secret', opId: 'op-test' });
  const seen: string[] = [];
  const r = await c.exec('echo out; echo err >&2; echo "$FROM_INIT $X"; pwd; exit 3', {
    envs: { X: 'x' },
    cwd: '/tmp',
    onStdout: (b) => {
      seen.push(Buffer.from(b).toString());
    },
  });
  assert.deepEqual(
    { code: r.exitCode, out: r.stdout, err: r.stderr, status: r.status },
    { code: 3, out: 'out\nyes x\n/tmp\n', err: 'err\n', status: 'exit status 3' },
  );
  assert.equal(seen.join(''), r.stdout);
  await assert.rejects(c.exec('true', { cwd: '/no/such' }), {
    code: 'invalid_argument',
    message: /does not exist/,
  });
  await assert.rejects(c.exec('sleep 20', { timeoutMs: 300 }), { code: 'timeout' });
  await assert.rejects(anon.init({ accessToken: 'other', timestamp: new Date().toISOString() }), {
    code: 'guest_agent_error',
    message: /401/,
  });
  await c.init({ accessToken: 'rotated', timestamp: new Date().toISOString() }, 'secret');
  assert.equal(
    (await new HttpGuestClient({ baseUrl, accessToken: 'rotated' }).exec('echo ok')).stdout,
    'ok\n',
  );
});

test("init sends the entropy seed and returns the agent's x-kiln-entropy", async () => {
  const c = new HttpGuestClient({ baseUrl, accessToken: 'rotated' });
  const entropySeed = Buffer.alloc(64, 7).toString('base64');
  // The in-process agent has no root helper (no VM): it says so.
  assert.deepEqual(await c.init({ timestamp: new Date().toISOString(), entropySeed }), {
    entropy: 'unavailable',
  });
  assert.deepEqual(await c.init({ timestamp: new Date().toISOString() }), { entropy: undefined });
  await assert.rejects(c.init({ timestamp: new Date().toISOString(), entropySeed: 'short' }), {
    code: 'guest_agent_error',
    message: /400.*entropySeed must be base64 of 32 to 256 bytes/,
  });
});

test('an agent that is not there is guest_agent_error', async () => {
  await assert.rejects(new HttpGuestClient({ baseUrl: 'http://127.0.0.1:9' }).health(1000), {
    code: 'guest_agent_error',
  });
});

test('a quiet command outlives the idle deadline: the agent sends keep-alives', async () => {
  const c = new HttpGuestClient({ baseUrl, accessToken: 'rotated', timeouts: { execIdleMs: 1500 } });
  const r = await c.exec('sleep 3.5; echo done');
  assert.deepEqual([r.exitCode, r.stdout], [0, 'done\n']);
});

test('a guest that accepts connections but never answers fails every call within its deadline', async () => {
  // What a stopped VM looks like from the host: QEMU's forward accepts, nothing ever answers.
  const held = new Set<Socket>();
  const mute = createServer((s) => held.add(s));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const c = new HttpGuestClient({
    baseUrl: `http://127.0.0.1:${(mute.address() as AddressInfo).port}`,
    accessToken: 't',
    timeouts: { execIdleMs: 600, initMs: 400, metricsMs: 400, healthMs: 400 },
  });
  try {
    const within = async (p: Promise<unknown>, ms: number, message: RegExp): Promise<void> => {
      const t0 = Date.now();
      await assert.rejects(p, { code: 'guest_agent_error', message });
      assert.ok(Date.now() - t0 < ms, `failed after ${Date.now() - t0} ms`);
    };
    await within(c.exec('echo hi'), 3000, /not responding.*nothing, not even a keep-alive, for 600 ms/);
    await within(c.health(), 2000, /did not answer \/health: no answer within 400 ms/);
    await within(
      c.init({ timestamp: new Date().toISOString() }),
      2000,
      /\/init failed: no answer within 400 ms/,
    );
    await within(c.metrics(), 2000, /\/metrics failed: no answer within 400 ms/);
    // The caller's own cancel still wins over the deadline.
    const ac = new AbortController();
    const p = c.exec('echo hi', { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, { code: 'cancelled' });
  } finally {
    for (const s of held) s.destroy();
    mute.close();
  }
});

test('upload streams a body into a guest file; exec without keepOutput streams with backpressure', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-upload-'));
  const c = new HttpGuestClient({ baseUrl, accessToken: 'rotated' });
  const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 << 10, i));
  await c.upload(join(dir, 'big.bin'), Readable.from(chunks), { user: 'root' });
  assert.deepEqual(await readFile(join(dir, 'big.bin')), Buffer.concat(chunks));
  await assert.rejects(c.upload(join(dir, 'x'), Readable.from([Buffer.from('x')]), { user: 'nosuchuser' }), {
    code: 'guest_agent_error',
    message: /refused the upload .*\(401\).*nosuchuser/,
  });
  let n = 0;
  const r = await c.exec(`head -c 3000000 ${join(dir, 'big.bin')}`, {
    keepOutput: false,
    onStdout: async (b) => {
      n += b.length;
      await new Promise((res) => setTimeout(res, 1));
    },
  });
  assert.deepEqual([r.exitCode, r.stdout, n], [0, '', 3_000_000]);
  await rm(dir, { recursive: true, force: true });
});

test('exec with stdin: writeStdin streams MBs to a slow reader and closes stdin; a reader that exits early ends it', async () => {
  const c = new HttpGuestClient({ baseUrl, accessToken: 'rotated' });
  const input = Buffer.alloc(4 << 20);
  for (let i = 0; i < input.length; i++) input[i] = (i * 7919) % 251;
  let fed: Promise<{ ended: boolean }> | undefined;
  // A reader slower than the input: the agent waits for its pipe instead of buffering it all.
  const r = await c.exec('sleep 0.5; sha256sum; wc -c', {
    stdin: true,
    onStart: (pid) => {
      fed = c.writeStdin(pid, Readable.from([input.subarray(0, 1 << 20), input.subarray(1 << 20)]));
    },
  });
  assert.ok(fed, 'onStart gave the pid');
  assert.deepEqual(await fed, { ended: false });
  const digest = createHash('sha256').update(input).digest('hex');
  assert.equal(r.stdout, `${digest}  -\n0\n`);
  // A command that reads one line and exits: the rest of the input is dropped, not an error.
  let early: Promise<{ ended: boolean }> | undefined;
  const endless = async function* () {
    for (;;) {
      yield Buffer.from('line\n'.repeat(4096));
      await new Promise((res) => setTimeout(res, 5));
    }
  };
  const h = await c.exec('head -n 1', {
    stdin: true,
    onStart: (pid) => {
      early = c.writeStdin(pid, endless());
    },
  });
  assert.equal(h.stdout, 'line\n');
  assert.deepEqual(await early, { ended: true });
  // Without stdin the command reads EOF at once.
  assert.equal((await c.exec('wc -c')).stdout, '0\n');
});

test("exec runs a login shell unless asked not to (kiln's own steps)", async () => {
  const c = new HttpGuestClient({ baseUrl, accessToken: 'rotated' });
  const probe = 'shopt -q login_shell && echo login || echo plain';
  assert.equal((await c.exec(probe)).stdout, 'login\n');
  assert.equal((await c.exec(probe, { login: false })).stdout, 'plain\n');
});
