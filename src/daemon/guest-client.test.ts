import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createAgent, type Agent } from '../guest/agent.ts';
import { HttpGuestClient } from './guest-client.ts';

// The real agent, in-process (tests may cross layers; the code under test does not).
let agent: Agent;
let baseUrl: string;
before(async () => {
  agent = createAgent({ defaultUser: 'root', log: () => undefined });
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
    envVars: { FROM_INIT: 'yes' },
    timestamp: new Date().toISOString(),
  });
  await assert.rejects(anon.exec('true'), { code: 'guest_agent_error' }, 'the token is now required');
  const c = new HttpGuestClient({ baseUrl, accessToken: 'secret', opId: 'op-test' });
  const seen: string[] = [];
  const r = await c.exec('echo out; echo err >&2; echo "$FROM_INIT $X"; pwd; exit 3', {
    envs: { X: 'x' },
    cwd: '/tmp',
    onStdout: (b) => seen.push(Buffer.from(b).toString()),
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

test('an agent that is not there is guest_agent_error', async () => {
  await assert.rejects(new HttpGuestClient({ baseUrl: 'http://127.0.0.1:9' }).health(1000), {
    code: 'guest_agent_error',
  });
});
