/**
 * The dashboard's terminals against the real guest agent, in-process on the host (as root, like
 * src/guest/agent.test.ts): a PTY shell's output, input, Ctrl-C, resize, UTF-8 and close.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tokenSha256 } from '../../core/envd-auth.ts';
import { createLogger } from '../../core/log.ts';
import { createAgent, type Agent } from '../../guest/agent.ts';
import { HttpGuestClient } from '../guest-client.ts';
import { TerminalService, type Terminal, type TerminalEvent } from './terminals.ts';

let agent: Agent;
let svc: TerminalService;
let dir: string;
const TOKEN = 'tok-terminals-0123456789';

/** Collects a terminal's output as text. */
function screen(t: Terminal): { text: () => string; exit: () => string | undefined; stop: () => void } {
  let text = '';
  let exit: string | undefined;
  const dec = new TextDecoder();
  const stop = t.watch((e: TerminalEvent) => {
    if (e.kind === 'data') text += dec.decode(e.data, { stream: true });
    else exit = e.status;
  });
  return { text: () => text, exit: () => exit, stop };
}

async function until(what: string, fn: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('dashboard terminals through the guest agent', () => {
  before(async () => {
    const boot = 'boot-terminals-0123456789';
    dir = await mkdtemp(join(tmpdir(), 'kiln-term-'));
    agent = createAgent({
      defaultUser: 'root',
      log: () => undefined,
      bootstrapTokenSha256: tokenSha256(boot),
      ptyDir: join(dir, 'run'),
    });
    await agent.ready;
    await new Promise<void>((r) => agent.server.listen(0, '127.0.0.1', r));
    const baseUrl = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
    await new HttpGuestClient({ baseUrl }).init(
      { accessToken: TOKEN, envVars: { HOME: dir }, timestamp: new Date().toISOString() },
      boot,
    );
    svc = new TerminalService({
      agent: () => Promise.resolve({ sandbox: { accessToken: TOKEN }, baseUrl }),
      log: createLogger({ level: 'silent' }),
      user: 'root',
    });
  });
  after(async () => {
    svc.close();
    await agent.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs a shell: input, output, UTF-8, Ctrl-C, resize; only its opener may use it', async () => {
    const t = await svc.open('sbx-1', 'session-a', 80, 24);
    assert.throws(() => svc.get(t.id, 'session-b'), /does not exist/);
    assert.equal(svc.get(t.id, 'session-a'), t);
    const s = screen(t);
    await t.write(Buffer.from('echo $((6*7))\r'));
    await until('42', () => /^42\r?$/m.test(s.text()));
    await t.write(Buffer.from('sleep 300\r'));
    await new Promise((r) => setTimeout(r, 300));
    await t.write(Buffer.from('\x03'));
    await t.write(Buffer.from('echo ok-$((40+2)) ✓\r'));
    await until('ok-42 after Ctrl-C', () => /^ok-42 ✓\r?$/m.test(s.text()));
    await t.resize(100, 30);
    await t.write(Buffer.from('stty size\r'));
    await until('the new size', () => /^30 100\r?$/m.test(s.text()));
    // A second viewer gets what was shown so far.
    const again = screen(t);
    assert.match(again.text(), /ok-42/);
    again.stop();
    await t.write(Buffer.from('exit\r'));
    await until('the exit', () => s.exit() !== undefined);
    s.stop();
    await assert.rejects(t.write(Buffer.from('x')), /has ended/);
  });

  it('refuses a bad size', async () => {
    await assert.rejects(svc.open('sbx-1', 'a', 0, 24), /cols/);
    await assert.rejects(svc.open('sbx-1', 'a', 80, 5000), /rows/);
  });
});
