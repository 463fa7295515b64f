/**
 * Template builds through the unmodified `e2b` SDK's `Template` builder against a real kilnd with
 * real QEMU guests: a build that runs commands, copies a file, sets env and workdir and starts an
 * HTTP server with a ready check; a sandbox of it has all of that with the server already up at
 * its first command; logs reach onBuildLogs; an unchanged rebuild is fully cached, one changed
 * step re-runs only from there; a failing step and a ready command that never passes fail the
 * build with clear reasons; delete removes the template.
 * Run under the VM lock: `flock /work/.vm.lock node --test <this file>`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BuildError, Sandbox, Template, waitForPort, type LogEntry } from 'e2b';
import { loadConfig } from '../../src/core/config.ts';
import { CLI, removeStateDir, useKilnE2bEnv, type CliResult } from '../helpers/kilnd.ts';
import { pushTestImage, startRegistry } from '../helpers/oci-registry.ts';

let state: string;
let ctxDir: string;
let env: NodeJS.ProcessEnv;

/** The template definition; `marker` changes one runCmd (the third step). */
function definition(marker: string) {
  return Template({ fileContextPath: ctxDir })
    .fromTemplate('base')
    .runCmd('echo first > /tmp/first.txt')
    .copy('hello.txt', '/home/user/app/hello.txt')
    .runCmd(`echo ${marker} > /home/user/app/marker.txt`)
    .setEnvs({ GREETING: 'hi-from-template' })
    .setWorkdir('/home/user/app')
    .runCmd('pwd > where.txt')
    .setStartCmd('python3 -m http.server 8000', waitForPort(8000));
}

async function build(
  t: ReturnType<typeof definition>,
  name: string,
): Promise<{ logs: string[]; ms: number }> {
  const logs: string[] = [];
  const t0 = Date.now();
  await Template.build(t, name, {
    onBuildLogs: (e: LogEntry) => logs.push(e.message),
    requestTimeoutMs: 600_000,
  }).catch((e: unknown) => {
    // The SDK's BuildError carries the reason; the log says what led to it.
    throw new Error(`build of ${name} failed: ${String(e)}\n${logs.slice(-15).join('\n')}`, { cause: e });
  });
  return { logs, ms: Date.now() - t0 };
}

/**
 * `kiln ...` without blocking the event loop (kilnSync would: the SDK's pooled keep-alive socket
 * then misses the server's close while the CLI runs, and its next request dies with EPIPE).
 */
function kiln(...args: string[]): Promise<CliResult> {
  return kilnWithInput('', ...args);
}

/** `kiln ...` with `input` on its standard input. */
function kilnWithInput(input: string, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { env, encoding: 'utf8', timeout: 600_000 },
      (err, stdout, stderr) => {
        const code = err && typeof err.code === 'number' ? err.code : err ? 1 : 0;
        resolve({ status: code, stdout, stderr });
      },
    );
    child.stdin?.end(input);
  });
}

const ran = (logs: string[]): string[] => logs.filter((l) => /^\[\d+\/\d+\] /.test(l));
const cached = (logs: string[]): string[] => logs.filter((l) => /^CACHED \[\d+\//.test(l));

// The builds' ready deadline. A Python server's start in a TCG guest took more than 8 s in a
// CI run with two test files at once; the ready command that never passes waits all of it.
const READY_S = 30;

describe('template builds through the e2b SDK (real guests)', { timeout: 1_800_000 }, () => {
  before(async () => {
    state = await mkdtemp('/tmp/kiln-e2btpl-');
    ctxDir = await mkdtemp('/tmp/kiln-e2btpl-ctx-');
    await writeFile(join(ctxDir, 'hello.txt'), 'hello from the build context\n');
    env = {
      ...process.env,
      KILN_STATE_DIR: state,
      KILN_E2B_API_PORT: '0',
      KILN_E2B_SANDBOX_PORT: '0',
      KILN_TEMPLATE_READY_TIMEOUT_MS: String(READY_S * 1000),
    };
    delete process.env['E2B_DOMAIN'];
    delete process.env['E2B_DEBUG'];
    useKilnE2bEnv(env);
  });
  after(async () => {
    await removeStateDir(env, state);
    await rm(ctxDir, { recursive: true, force: true });
  });

  it('builds, caches, re-runs from a changed step; the sandbox has files, env and a running server', async () => {
    const cold = await build(definition('one'), 'tpl-web');
    assert.ok(
      cold.logs.some((l) => l.includes('RUN echo first')),
      cold.logs.join('\n'),
    );
    assert.equal(ran(cold.logs).length, 6, cold.logs.join('\n'));

    const sbx = await Sandbox.create('tpl-web', { requestTimeoutMs: 600_000 });
    // The server was started during the build and captured running: it answers at once.
    const r = await sbx.commands.run(
      'curl -s http://127.0.0.1:8000/hello.txt; echo "$GREETING"; cat /home/user/app/marker.txt /home/user/app/where.txt /tmp/first.txt; stat -c %U /home/user/app/hello.txt',
    );
    assert.equal(
      r.stdout,
      'hello from the build context\nhi-from-template\none\n/home/user/app\nfirst\nuser\n',
    );
    // The last setWorkdir is the sandbox's default cwd (as in E2B); the user stays `user`.
    assert.equal((await sbx.commands.run('pwd; id -un')).stdout, '/home/user/app\nuser\n');
    await sbx.kill();

    const again = await build(definition('one'), 'tpl-web');
    assert.equal(ran(again.logs).length, 0, again.logs.join('\n'));
    assert.equal(cached(again.logs).length, 6, again.logs.join('\n'));
    assert.ok(
      again.logs.some((l) => l.startsWith('CACHED [finalize]')),
      again.logs.join('\n'),
    );
    assert.ok(again.ms < cold.ms / 3, `cached rebuild ${again.ms} ms vs cold ${cold.ms} ms`);

    const changed = await build(definition('two'), 'tpl-web');
    assert.deepEqual(
      ran(changed.logs).map((l) => l.replace(/ .*/, '')),
      ['[3/6]', '[4/6]', '[5/6]', '[6/6]'],
      changed.logs.join('\n'),
    );
    assert.equal(cached(changed.logs).length, 2);
    process.stdout.write(
      `# cold build ${cold.ms} ms, cached rebuild ${again.ms} ms, one changed step ${changed.ms} ms\n`,
    );
    const s2 = await Sandbox.create('tpl-web');
    assert.equal((await s2.commands.run('cat /home/user/app/marker.txt')).stdout, 'two\n');
    await s2.kill();
    // Clones of a template captured with its start command running do not share randomness.
    const clones = await Promise.all([Sandbox.create('tpl-web'), Sandbox.create('tpl-web')]);
    const read =
      'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; curl -s -o /dev/null -w " %{http_code}" http://127.0.0.1:8000/hello.txt';
    const [o1, o2] = await Promise.all(clones.map((c) => c.commands.run(read)));
    assert.match(o1?.stdout ?? '', /^[0-9a-f]{64} 200$/);
    assert.match(o2?.stdout ?? '', /^[0-9a-f]{64} 200$/);
    assert.notEqual(o1?.stdout, o2?.stdout);
    await Promise.all(clones.map((c) => c.kill()));

    const list = (await await fetch(`${process.env['E2B_API_URL']}/templates`, {
      headers: { 'x-api-key': process.env['E2B_API_KEY'] ?? '' },
    }).then((x) => x.json())) as { names: string[]; buildCount: number }[];
    assert.ok(list.some((t) => t.names.includes('tpl-web') && t.buildCount === 3));

    assert.equal(await Template.exists('tpl-web'), true);
    const del = await fetch(`${process.env['E2B_API_URL']}/templates/tpl-web`, {
      method: 'DELETE',
      headers: { 'x-api-key': process.env['E2B_API_KEY'] ?? '' },
    });
    assert.equal(del.status, 204);
    assert.equal(await Template.exists('tpl-web'), false);
    await assert.rejects(Sandbox.create('tpl-web'), /does not exist|not found/i);
    // Its layers are gone from the snapshot store too (none is listed; none is left live).
    const snaps = await Sandbox.listSnapshots().nextItems();
    assert.deepEqual(snaps, []);
  });

  it('a failing runCmd fails the build with its exit code and output; a ready command that never passes fails at its deadline', async () => {
    const bad = Template().fromTemplate('base').runCmd('echo about-to-fail; exit 7');
    await assert.rejects(build(bad, 'tpl-bad'), (e: Error) => {
      assert.match(e.message, /exit code 7/);
      assert.match(e.message, /about-to-fail/);
      return true;
    });
    const never = Template().fromTemplate('base').setStartCmd('sleep 1000', 'test -e /nonexistent');
    const t0 = Date.now();
    await assert.rejects(
      build(never, 'tpl-never'),
      new RegExp(`ready command did not succeed within ${READY_S} s`),
    );
    assert.ok(Date.now() - t0 >= READY_S * 1000);
    assert.equal(await Template.exists('tpl-never'), false);
  });

  it('kiln template build -f Dockerfile: steps, COPY, ENV, ARG, WORKDIR, USER, CMD as the start command; get and rm', async () => {
    await writeFile(
      join(ctxDir, 'Dockerfile'),
      [
        'FROM base',
        'ARG WHO=nobody',
        'ENV FROM_DF=yes',
        'RUN echo built-by-$WHO > /tmp/who.txt && id -un > /tmp/builder.txt',
        'COPY hello.txt /opt/app/',
        'WORKDIR /opt/app',
        'USER user',
        'RUN id -un > /tmp/whoami.txt',
        'CMD ["python3", "-m", "http.server", "8001"]',
        '',
      ].join('\n'),
    );
    const r = await kiln(
      'template',
      'build',
      '-f',
      join(ctxDir, 'Dockerfile'),
      '--name',
      'tpl-df',
      '--build-arg',
      'WHO=cli',
      '--ready-cmd',
      'curl -sf http://127.0.0.1:8001/hello.txt',
      ctxDir,
    );
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /\[4\/7\] COPY hello.txt \/opt\/app\//);
    assert.match(r.stdout, /template tpl-df = /);
    const sbx = await Sandbox.create('tpl-df');
    const out = await sbx.commands.run(
      'curl -s http://127.0.0.1:8001/hello.txt; echo "$FROM_DF"; cat /tmp/who.txt /tmp/builder.txt /tmp/whoami.txt',
    );
    assert.equal(out.stdout, 'hello from the build context\nyes\nbuilt-by-cli\nroot\nuser\n');
    // The Dockerfile's last WORKDIR and USER are the sandbox's defaults.
    assert.equal((await sbx.commands.run('pwd; id -un')).stdout, '/opt/app\nuser\n');
    await sbx.kill();
    const got = await kiln('template', 'get', 'tpl-df', '--json');
    assert.equal(got.status, 0, got.stderr);
    assert.equal((JSON.parse(got.stdout) as { builds: { status: string }[] }).builds[0]?.status, 'ready');
    const bad = await kiln(
      'template',
      'build',
      '-f',
      join(ctxDir, 'Dockerfile'),
      '--name',
      'tpl-df',
      '--start-cmd',
      'exit 3',
      '--ready-cmd',
      'false',
      ctxDir,
    );
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /ready command did not succeed/);
    assert.equal((await kiln('template', 'rm', 'tpl-df')).status, 0);
    assert.equal(await Template.exists('tpl-df'), false);
  });

  it('fromImage of an OCI image in a local registry, and the same as a Dockerfile FROM through the CLI: the image becomes the base, the steps run on it', async () => {
    const dir = await mkdtemp('/tmp/kiln-e2btpl-reg-');
    const reg = await startRegistry(dir, { cacheDir: loadConfig().cacheDir });
    try {
      await pushTestImage(dir, reg.registry, loadConfig().cacheDir, 'kiln/tpl-base:t');
      const t = Template()
        .fromImage(`${reg.registry}/kiln/tpl-base:t`)
        .setEnvs({ FROM_OCI: 'yes' })
        .runCmd('echo "on-oci $FROM_OCI" > /tmp/step.txt', { user: 'root' });
      await build(t, 'tpl-oci');
      const sbx = await Sandbox.create('tpl-oci');
      const r = await sbx.commands.run('cat /srv/app/marker /tmp/step.txt; echo "env=$FROM_OCI"');
      assert.equal(r.stdout, 'from the OCI image\non-oci yes\nenv=yes\n');
      await sbx.kill();
      // The same image as a Dockerfile's FROM, through the CLI, with the rest of the subset.
      const df = join(dir, 'Dockerfile.oci');
      await writeFile(
        df,
        [
          `FROM ${reg.registry}/kiln/tpl-base:t`,
          'ENV FROM_DF=yes',
          'RUN echo df-on-oci > /tmp/df.txt',
          'COPY hello.txt /opt/app/',
          'WORKDIR /opt/app',
          'USER user',
          'RUN id -un > /tmp/whoami.txt',
          'CMD ["/bin/busybox", "sh", "-c", "echo started > /tmp/started; exec /bin/busybox sleep 100000"]',
          '',
        ].join('\n'),
      );
      const r2 = await kiln(
        'template',
        'build',
        '-f',
        df,
        '--name',
        'tpl-df-oci',
        '--ready-cmd',
        'test -s /tmp/started',
        ctxDir,
      );
      assert.equal(r2.status, 0, r2.stdout + r2.stderr);
      const sbx2 = await Sandbox.create('tpl-df-oci');
      assert.equal(
        (
          await sbx2.commands.run(
            'cat /srv/app/marker /tmp/df.txt hello.txt /tmp/whoami.txt /tmp/started; echo "$FROM_DF"; pwd; id -un',
          )
        ).stdout,
        'from the OCI image\ndf-on-oci\nhello from the build context\nuser\nstarted\nyes\n/opt/app\nuser\n',
      );
      await sbx2.kill();
      await writeFile(df, `FROM ${reg.registry}/kiln/no-such:t\nRUN true\n`);
      const r3 = await kiln('template', 'build', '-f', df, '--name', 'tpl-df-missing', dir);
      assert.notEqual(r3.status, 0);
      assert.match(r3.stderr, /no-such/);
      await assert.rejects(
        build(Template().fromImage(`${reg.registry}/kiln/no-such:t`), 'tpl-missing'),
        /fromImage/,
      );
    } finally {
      await reg.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('fromImage of a private registry image (htpasswd basic auth) with credentials, through the SDK and the CLI; without them or with wrong ones the build fails although the image is cached', async () => {
    const dir = await mkdtemp('/tmp/kiln-e2btpl-priv-');
    const user = { username: 'robot', password: 'pw-e2b-3f8c-private' };
    const reg = await startRegistry(dir, { auth: user, cacheDir: loadConfig().cacheDir });
    try {
      await pushTestImage(dir, reg.registry, loadConfig().cacheDir, 'private/img:t', user);
      const ref = `${reg.registry}/private/img:t`;
      await build(
        Template().fromImage(ref, user).runCmd('echo priv > /tmp/priv.txt', { user: 'root' }),
        'tpl-priv',
      );
      const sbx = await Sandbox.create('tpl-priv');
      assert.equal(
        (await sbx.commands.run('cat /srv/app/marker /tmp/priv.txt')).stdout,
        'from the OCI image\npriv\n',
      );
      await sbx.kill();
      // The image is cached now, and still the registry decides: the SDK's BuildError says why.
      const refused = async (creds: { username: string; password: string } | undefined, re: RegExp) => {
        const t = creds ? Template().fromImage(ref, creds) : Template().fromImage(ref);
        await assert.rejects(
          Template.build(t.runCmd('cat /srv/app/marker'), 'tpl-priv-refused', { requestTimeoutMs: 600_000 }),
          (e: Error) => e instanceof BuildError && re.test(e.message) && e.message.includes(reg.registry),
        );
      };
      await refused(undefined, /wants credentials \(basic auth\)/);
      await refused({ username: 'robot', password: 'wrong-pw' }, /the registry refused the credentials/);
      // The CLI: FROM the private image, the password on standard input.
      const df = join(dir, 'Dockerfile.priv');
      await writeFile(df, `FROM ${ref}\nRUN echo df-priv > /tmp/df.txt\n`);
      const cli = (input: string, ...extra: string[]) =>
        kilnWithInput(input, 'template', 'build', '-f', df, '--name', 'tpl-priv-df', ...extra, dir);
      const ok = await cli(`${user.password}\n`, '--registry-user', 'robot', '--registry-password-stdin');
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      const sbx2 = await Sandbox.create('tpl-priv-df');
      assert.equal(
        (await sbx2.commands.run('cat /srv/app/marker /tmp/df.txt')).stdout,
        'from the OCI image\ndf-priv\n',
      );
      await sbx2.kill();
      const none = await cli('');
      assert.notEqual(none.status, 0);
      assert.match(none.stderr, /wants credentials/);
      // The password is in no log and no byte of the database.
      const files = (await readdir(state)).filter((n) => /^(kilnd\.log|kiln\.db)/.test(n));
      assert.ok(files.includes('kilnd.log') && files.includes('kiln.db'), files.join(' '));
      for (const f of files) {
        const text = await readFile(join(state, f));
        assert.ok(!text.includes(user.password), `${f} holds the password`);
      }
    } finally {
      await reg.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
