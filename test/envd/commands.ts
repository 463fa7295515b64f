/**
 * The envd suite (envd.suite.ts), commands: run, cwd and envs, exit codes, streaming, stdin,
 * list/connect/kill, timeouts.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { Sandbox } from 'e2b';
import { type Current, until } from './helpers.ts';
import type { EnvdSdk, EnvdTarget } from './envd.suite.ts';

/** What a CommandExitError carries, of whichever SDK release threw it. */
interface ExitError {
  exitCode: number;
  stdout: string;
  error?: string;
}

export function commandsTests(current: () => Current, sdk: EnvdSdk): void {
  describe('commands', () => {
    let t: EnvdTarget, sbx: Sandbox;
    before(() => ({ t, sbx } = current()));

    it('run returns stdout, stderr and exit code 0, as the default user in bash -l', async () => {
      const r = await sbx.commands.run('echo out; echo err >&2; whoami; echo "$0"');
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, `out\n${t.defaultUser}\n/bin/bash\n`);
      assert.equal(r.stderr, 'err\n');
    });

    it('honours cwd, envs and user root', async () => {
      const r = await sbx.commands.run('pwd; echo "$KILN_T"; id -u', {
        cwd: t.dir,
        envs: { KILN_T: 'v1' },
        user: 'root',
      });
      assert.equal(r.stdout, `${t.dir}\nv1\n0\n`);
    });

    it('a non-zero exit raises CommandExitError with the code and output', async () => {
      await assert.rejects(sbx.commands.run('echo partial; exit 3'), (e: unknown) => {
        assert.ok(e instanceof sdk.CommandExitError);
        const x = e as unknown as ExitError;
        assert.equal(x.exitCode, 3);
        assert.equal(x.stdout, 'partial\n');
        assert.match(x.error ?? '', /exit status 3/);
        return true;
      });
    });

    it('a missing cwd is a clear error', async () => {
      await assert.rejects(
        sbx.commands.run('true', { cwd: '/no/such/dir' }),
        /cwd '\/no\/such\/dir' does not exist/,
      );
    });

    it('streams output through callbacks', async () => {
      const seen: string[] = [];
      await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.1; done', {
        onStdout: (d) => void seen.push(d),
      });
      assert.equal(seen.join(''), 'line1\nline2\nline3\n');
    });

    if (sdk.lacks.closeStdin)
      it(`${sdk.name} has no commands.closeStdin, so the stdin check is not run`, () => {
        assert.equal('closeStdin' in sbx.commands, false);
      });
    else
      it('background + stdin + closeStdin + wait', async () => {
        const h = await sbx.commands.run('cat; echo done', { background: true, stdin: true });
        assert.ok(h.pid > 0);
        await sbx.commands.sendStdin(h.pid, 'hello ');
        await sbx.commands.sendStdin(h.pid, 'world\n');
        await sbx.commands.closeStdin(h.pid);
        const r = await h.wait();
        assert.equal(r.stdout, 'hello world\ndone\n');
      });

    it('list shows a running process; connect re-attaches by pid; kill ends it with CommandExitError', async () => {
      const h = await sbx.commands.run('echo started; sleep 60', { background: true, timeoutMs: 0 });
      const list = await sbx.commands.list();
      const mine = list.find((p) => p.pid === h.pid);
      assert.ok(mine, `pid ${h.pid} listed`);
      assert.equal(mine.cmd, '/bin/bash');
      assert.deepEqual(mine.args, ['-l', '-c', 'echo started; sleep 60']);
      await h.disconnect();
      const again = await sbx.commands.connect(h.pid);
      assert.equal(again.pid, h.pid);
      assert.equal(await sbx.commands.kill(h.pid), true);
      await assert.rejects(again.wait(), (e: unknown) => {
        assert.ok(e instanceof sdk.CommandExitError);
        assert.equal((e as unknown as ExitError).exitCode, -1);
        assert.match((e as unknown as ExitError).error ?? '', /signal: killed/);
        return true;
      });
      await until(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid));
      assert.equal(await sbx.commands.kill(h.pid), false, 'killing a gone process answers false');
    });

    it('the process outlives its stream; timeoutMs kills it at the deadline', async () => {
      const marker = `${t.dir}/survivor`;
      const h = await sbx.commands.run(`sleep 1; echo alive > ${marker}`, { background: true });
      await h.disconnect();
      assert.equal(await until(async () => ((await sbx.files.exists(marker)) ? true : undefined)), true);
      const t0 = Date.now();
      await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1500 }), /timeout|deadline|killed/i);
      assert.ok(Date.now() - t0 < 10_000);
      await until(async () => !(await sbx.commands.list()).some((p) => p.args.includes('sleep 30')));
    });
  });
}
