/**
 * /init's entropy seed on the guest side: decoded and handed to the root helper (which adds it
 * to the kernel pool and reseeds the CRNG) before the answer, whose `x-kiln-entropy` header says
 * how it went; a malformed seed is refused without being quoted; the seed is never logged.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { AgentAuth } from './agent-auth.ts';
import type { ClockSetter, EntropyResult } from './clock.ts';
import { handleInit } from './init.ts';
import type { AgentState } from './state.ts';

/** An agent's state before its first /init, with no bootstrap token (anyone may /init). */
const freshState = (): AgentState => ({
  accessToken: undefined,
  bootstrapTokenSha256: undefined,
  envVars: {},
  defaultUser: 'root',
  defaultWorkdir: undefined,
  lastInitMs: 0,
});

describe('/init entropy seed (guest agent)', () => {
  const logs: string[] = [];
  const seeds: Buffer[] = [];
  let answer: EntropyResult = 'reseeded';
  let server: Server;
  let base = '';
  let state: AgentState;
  before(async () => {
    state = freshState();
    // The root helper as /init sees it (the real one does ioctls: covered in test/integration).
    const clock = {
      reseed: (b: Buffer) => {
        seeds.push(b);
        return Promise.resolve(answer);
      },
      set: () => Promise.resolve('helper' as const),
    } as unknown as ClockSetter;
    const deps = { state, auth: new AgentAuth(state), clock, log: (l: string) => logs.push(l) };
    server = createServer((req, res) => void handleInit(req, res, deps));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(
    () =>
      new Promise<void>((r) =>
        server.close(() => {
          r();
        }),
      ),
  );

  const init = (body: object): Promise<Response> =>
    fetch(`${base}/init`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('hands the decoded seed to the helper before answering, and says how it went', async () => {
    const seed = randomBytes(64);
    const r = await init({ entropySeed: seed.toString('base64') });
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('x-kiln-entropy'), 'reseeded');
    assert.deepEqual(seeds, [seed]);
    answer = 'mixed';
    const again = await init({ entropySeed: randomBytes(32).toString('base64') });
    assert.equal(again.headers.get('x-kiln-entropy'), 'mixed');
    assert.deepEqual(logs, ['entropy seed from /init: mixed, the CRNG was not reseeded']);
    assert.equal((await init({})).headers.get('x-kiln-entropy'), null, 'no seed, no header');
    assert.equal(seeds.length, 2);
  });

  it('refuses a malformed seed without quoting it, and takes nothing of that /init', async () => {
    const n = seeds.length;
    for (const bad of [
      '!!not-base64!!',
      randomBytes(16).toString('base64'),
      randomBytes(300).toString('base64'),
      7,
    ]) {
      const r = await init({ entropySeed: bad, envVars: { A: '1' } });
      assert.equal(r.status, 400);
      const text = await r.text();
      assert.match(text, /entropySeed must be base64 of 32 to 256 bytes/);
      if (typeof bad === 'string') assert.equal(text.includes(bad), false, 'the seed is not quoted');
    }
    assert.equal(seeds.length, n);
    assert.deepEqual(state.envVars, {}, 'the refused /init set nothing');
    assert.equal(
      logs.some((l) => /[A-Za-z0-9+/]{40}/.test(l)),
      false,
      'no seed in the log',
    );
  });
});

describe('/init reseed and clock set (guest agent)', () => {
  it('asks the helper for both at once, answers after both, logs the clock line after the answer', async () => {
    const calls: string[] = [];
    const release: (() => void)[] = [];
    const held = <T>(what: string, v: T) =>
      new Promise<T>((r) => {
        calls.push(what);
        release.push(() => {
          r(v);
        });
      });
    const clock = {
      reseed: () => held('reseed', 'reseeded' as const),
      set: () => held('set', 'helper' as const),
    } as unknown as ClockSetter;
    const state = freshState();
    const logs: string[] = [];
    const server = createServer(
      (req, res) =>
        void handleInit(req, res, { state, auth: new AgentAuth(state), clock, log: (l) => logs.push(l) }),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      let answered = false;
      const res = fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/init`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          entropySeed: randomBytes(32).toString('base64'),
          // An hour behind: the guest's clock is off, so it is set.
          timestamp: new Date(Date.now() - 3_600_000).toISOString(),
        }),
      }).then((r) => {
        answered = true;
        return r;
      });
      for (let i = 0; i < 200 && calls.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(calls, ['reseed', 'set'], 'both asked before either answered');
      assert.equal(answered, false);
      assert.deepEqual(logs, []);
      for (const r of release) r();
      const r = await res;
      assert.equal(r.status, 204);
      assert.equal(r.headers.get('x-kiln-entropy'), 'reseeded');
      assert.match(logs.join('\n'), /^clock set from \/init by helper \(was 36\d{5} ms off\)$/);
    } finally {
      await new Promise<void>((r) =>
        server.close(() => {
          r();
        }),
      );
    }
  });
});
