/**
 * The push job over the fake driver with a scripted guest: the steps and users in order, the
 * event, the journal (a failure after the staging step unwinds it: the guest's staging files are
 * removed as root), the body never flows before the upload reads it, and the workspace lock
 * serialises pushes and exports of one sandbox without holding the sandbox lock.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ExecOpts, ExecResult, GuestClient } from '../guest-client.ts';
import { ServiceFixture } from '../testing/fixtures.ts';
import { PLACED, STAGED } from './scripts.ts';

const HEAD = 'a'.repeat(40);

interface Call {
  what: string;
  user: string | undefined;
}

/** A guest that runs nothing: it records each step and answers as `answer` says. */
class ScriptedGuest {
  calls: Call[] = [];
  uploaded = '';
  failOn: string | undefined;
  /** The push script says it moved the tree into place itself. */
  placed = false;
  uploadGate: Promise<void> = Promise.resolve();
  /** The push's op id, from its staging directory's name. */
  opId = '';
  #fed: () => void = () => undefined;
  readonly client = (): GuestClient => ({
    health: () => Promise.resolve(),
    init: () => Promise.resolve({ entropy: 'reseeded' }),
    metrics: () => Promise.reject(new Error('unused')),
    upload: () => Promise.reject(new Error('unused')),
    exec: (cmd: string, o?: ExecOpts) => this.exec(cmd, o),
    writeStdin: async (pid, input) => {
      await this.uploadGate;
      let s = '';
      for await (const c of input) s += Buffer.from(c).toString();
      this.uploaded = s;
      this.calls.push({ what: `stdin of ${pid}`, user: undefined });
      this.#fed();
      return { ended: false };
    },
  });

  async exec(cmd: string, o?: ExecOpts): Promise<ExecResult> {
    const what = o?.stdin
      ? 'push'
      : cmd.includes('mv -T')
        ? 'finish'
        : cmd.includes('kill -9')
          ? 'remove'
          : cmd.includes('GIT_INDEX_FILE')
            ? 'export'
            : 'other';
    this.calls.push({
      what:
        what === 'remove'
          ? `remove ${cmd.slice(cmd.indexOf('\nrm -rf -- ') + 11).split('\n')[0] ?? ''}${cmd.includes('kiln-push') ? ' and what it placed' : ''}`
          : what,
      user: o?.user,
    });
    if (what === 'push') {
      this.opId = /\.kiln-ws-(op-\w+)/.exec(cmd)?.[1] ?? '';
      // The push script: staged, then it reads its input to the end.
      const fed = new Promise<void>((r) => (this.#fed = r));
      o?.onStart?.(7);
      await o?.onStdout?.(Buffer.from(`${STAGED}\n`));
      await fed;
    }
    if (this.failOn === what)
      return {
        exitCode: 128,
        stdout: '',
        stderr: "fatal: 'nosuchref' is not a commit",
        status: 'exit status 128',
      };
    if (what === 'push')
      await o?.onStdout?.(Buffer.from(`${HEAD}\nwork\n${this.placed ? `${PLACED}\n` : ''}`));
    if (what === 'export') void o?.onStdout?.(Buffer.from(`/home/user/r\n${HEAD}\n0\n`));
    return { exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' };
  }
}

describe('workspace push (fake guest)', () => {
  let fx: ServiceFixture;
  let g: ScriptedGuest;
  beforeEach(async () => {
    g = new ScriptedGuest();
    fx = await ServiceFixture.start({ base: true, deps: { guest: g.client } });
  });
  afterEach(() => fx.close());

  it('prepares and unpacks the streamed tar as the user, moves it into place as root, logs an event', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const v = await fx.svc.pushWorkspace(
      s.id,
      Readable.from([Buffer.from('tar bytes')]),
      { mode: 'full_copy', head: HEAD, name: 'r', branch: 'work' },
      { opId: 'req-1' },
    );
    assert.deepEqual(
      { ...v, pushedAt: '' },
      {
        sandboxId: s.id,
        guestPath: '/home/user/r',
        mode: 'full_copy',
        base: HEAD,
        branch: 'work',
        readOnly: false,
        bytes: 9,
        pushedAt: '',
      },
    );
    assert.equal(g.uploaded, 'tar bytes', 'nothing of the body was lost before the guest read it');
    assert.deepEqual(
      g.calls.map((c) => `${c.what} as ${c.user}`),
      ['push as user', 'stdin of 7 as undefined', 'finish as root'],
    );
    const op = fx.store.getOperation(g.opId);
    assert.deepEqual(
      [op.state, op.steps.map((x) => x.name)],
      ['done', ['guest staging', 'unpacked']],
      'journalled: the staging directory (before its input is sent), then unpacked',
    );
    const ev = fx.svc.logs(s.id).items.find((e) => e.message === 'workspace pushed to /home/user/r');
    assert.equal(ev?.data?.['base'], HEAD);
  });

  it('a push that found its target free moved the tree itself: no root command; read-only always asks root', async () => {
    const s = await fx.svc.create({ template: 'base' });
    g.placed = true;
    const push = (readOnly: boolean): Promise<unknown> =>
      fx.svc.pushWorkspace(
        s.id,
        Readable.from([Buffer.from('tar')]),
        { mode: 'full_copy', head: HEAD, name: 'r', readOnly },
        {},
      );
    await push(false);
    assert.deepEqual(
      g.calls.map((c) => `${c.what} as ${c.user}`),
      ['push as user', 'stdin of 7 as undefined'],
    );
    // Both steps' undo takes the staging directory and the target, while it bears this push's mark.
    const op = fx.store.getOperation(g.opId);
    const stage = `/home/user/.kiln-ws-${g.opId}`;
    for (const st of op.steps)
      assert.deepEqual(st.undo, {
        action: 'guest-remove',
        sandboxId: s.id,
        paths: [stage],
        placed: { path: '/home/user/r', mark: stage },
      });
    // A read-only push does not take the guest's word for it: root moves it and takes it over.
    g.calls.length = 0;
    await push(true);
    assert.deepEqual(
      g.calls.map((c) => `${c.what} as ${c.user}`),
      ['push as user', 'stdin of 7 as undefined', 'finish as root'],
    );
    const ro = fx.store.getOperation(g.opId).steps[0]?.undo;
    assert.deepEqual(
      ro,
      { action: 'guest-remove', sandboxId: s.id, paths: [`/home/user/.kiln-ws-${g.opId}`] },
      'a read-only push never places: its undo leaves the target alone',
    );
  });

  it('a failing step unwinds the journalled staging as root; the error says what failed', async () => {
    const s = await fx.svc.create({ template: 'base' });
    g.failOn = 'push';
    await assert.rejects(
      fx.svc.pushWorkspace(s.id, Readable.from([Buffer.from('x')]), {
        mode: 'full_copy',
        head: HEAD,
        name: 'r',
      }),
      {
        code: 'guest_agent_error',
        message: /unpacking the repository failed in the sandbox: fatal: 'nosuchref'/,
      },
    );
    const last = g.calls[g.calls.length - 1];
    assert.ok(last);
    assert.equal(last.user, 'root');
    assert.match(last.what, /^remove '\/home\/user\/\.kiln-ws-op-\w+' and what it placed$/);
    assert.ok(!g.calls.some((c) => c.what === 'finish'));
  });

  it('refuses a bad mode, head or ref, a path outside the home, and a sandbox that is not running', async () => {
    const s = await fx.svc.create({ template: 'base' });
    const body = (): Readable => Readable.from([]);
    const base = { mode: 'full_copy' as const, head: HEAD, name: 'r' };
    await assert.rejects(
      fx.svc.pushWorkspace(s.id, body(), { ...base, head: 'HEAD' }),
      /head: must be the full hex id/,
    );
    await assert.rejects(
      fx.svc.pushWorkspace(s.id, body(), { ...base, branch: '-x' }),
      /not a usable git ref/,
    );
    await assert.rejects(
      fx.svc.pushWorkspace(s.id, body(), { ...base, from: 'main' }),
      /--from needs --branch/,
    );
    await assert.rejects(
      fx.svc.pushWorkspace(s.id, body(), { ...base, guestPath: '/root/x' }),
      /outside the sandbox user's home/,
    );
    await fx.svc.kill(s.id);
    await assert.rejects(fx.svc.pushWorkspace(s.id, body(), base), {
      code: 'invalid_state',
      message: /is dead/,
    });
    assert.deepEqual(g.calls, []);
  });

  it('the workspace lock serialises push and export of a sandbox but not other operations', async () => {
    const s = await fx.svc.create({ template: 'base' });
    let open: () => void = () => undefined;
    g.uploadGate = new Promise((r) => (open = r));
    const order: string[] = [];
    const push = fx.svc
      .pushWorkspace(s.id, Readable.from([Buffer.from('x')]), { mode: 'full_copy', head: HEAD, name: 'r' })
      .then(() => order.push('push'));
    const exp = fx.svc
      .exportWorkspace(s.id, {}, { head: () => undefined, patch: () => undefined })
      .then(() => order.push('export'));
    await new Promise((r) => setTimeout(r, 20));
    // The push waits on its input: a snapshot of the same sandbox is not held up by it.
    await fx.svc.snapshot(s.id);
    order.push('snapshot');
    open();
    await Promise.all([push, exp]);
    assert.deepEqual(order, ['snapshot', 'push', 'export']);
  });
});
