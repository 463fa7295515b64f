/**
 * kiln's e2b SDK checks, for one SDK release: the envd behaviour list (test/envd/envd.suite.ts)
 * on a sandbox made by Sandbox.create through the envd proxy, then the control plane, API keys,
 * token isolation and egress. e2b-sdk.test.ts runs them for every release of the version matrix
 * against one kilnd; what an older release cannot call is replaced by a check, named for it,
 * that the release indeed lacks it (or by the same check through what it has instead).
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import type * as E2b from 'e2b';
import { envdSuite, type ErrorClass } from '../envd/envd.suite.ts';
import type { CliResult } from '../helpers/kilnd.ts';
import { startNetPeer } from '../helpers/net-peer.ts';

/** One release of the `e2b` package, and what it lacks of the pinned one. */
export interface SdkUnderTest {
  /** e.g. `e2b@2.7.0` */
  name: string;
  /** The module (older releases cast to the pinned one's type; `lacks` says what is missing). */
  mod: typeof E2b;
  lacks: {
    /** createSnapshot, listSnapshots, fork, deleteSnapshot. */
    snapshots?: boolean;
    /** `lifecycle: {onTimeout, autoResume}` (2.7 has `betaCreate({autoPause})`). */
    lifecycle?: boolean;
    /** `getInfo().allowInternetAccess`. */
    infoNetwork?: boolean;
    /** `commands.closeStdin`. */
    closeStdin?: boolean;
    /** `metadata` on files.write and EntryInfo (X-Metadata-* headers, envd 0.6.2). */
    fileMetadata?: boolean;
    /** `SandboxError.statusCode` (2.45 and older say the status in the message only). */
    statusCode?: boolean;
    /** `sandbox.git` (added in 2.x after 2.7; deprecated by E2B in favour of commands.run). */
    git?: boolean;
  };
}

type BetaCreate = (template: string, opts: { timeoutMs: number; autoPause: boolean }) => Promise<E2b.Sandbox>;

/** A sandbox's envd access token, as the API's SandboxDetail reports it. */
async function detailOf(id: string): Promise<{ envdAccessToken: string; allowInternetAccess: boolean }> {
  const r = await fetch(`${process.env['E2B_API_URL'] ?? ''}/sandboxes/${id}`, {
    headers: { 'x-api-key': process.env['E2B_API_KEY'] ?? '' },
  });
  assert.equal(r.status, 200);
  return (await r.json()) as { envdAccessToken: string; allowInternetAccess: boolean };
}
const tokenOf = async (id: string): Promise<string> => (await detailOf(id)).envdAccessToken;

/**
 * Registers the checks for `sdk`; `kiln` runs the CLI against the shared kilnd, whose three
 * variables are in process.env by the time the checks run.
 */
export function e2bSdkChecks(sdk: SdkUnderTest, kiln: (...args: string[]) => CliResult): void {
  const mod = sdk.mod;
  const { Sandbox, AuthenticationError, CommandExitError } = mod;
  // 2.7 has no SandboxNotFoundError: a missing sandbox is its NotFoundError.
  const NotFound: ErrorClass =
    (mod as { SandboxNotFoundError?: ErrorClass }).SandboxNotFoundError ??
    (mod as unknown as { NotFoundError: ErrorClass }).NotFoundError;
  /** 2.7 names it `betaPause`. */
  const pauseOf = (s: E2b.Sandbox): Promise<boolean> =>
    'pause' in s ? s.pause() : (s as unknown as { betaPause: () => Promise<boolean> }).betaPause();
  /** 2.7's getInfo has no allowInternetAccess: the API's SandboxDetail answers it. */
  const internetOf = async (s: E2b.Sandbox): Promise<boolean | undefined> =>
    sdk.lacks.infoNetwork
      ? (await detailOf(s.sandboxId)).allowInternetAccess
      : (await s.getInfo()).allowInternetAccess;

  envdSuite(
    `${sdk.name} through kilnd: Sandbox.create("base") and the envd proxy`,
    async () => {
      // The first create builds the base template (boot + snapshot), so it may take a while. The
      // suite uses a handle with the SDK's default request timeout: older releases leave some
      // request timers armed, and one of 10 minutes would hold the test process that long.
      const made = await Sandbox.create('base', {
        envs: { KILN_INIT_VAR: 'from-init' },
        requestTimeoutMs: 600_000,
      });
      const sandbox = await Sandbox.connect(made.sandboxId);
      const dir = '/home/user/kiln-test';
      await sandbox.files.makeDir(dir);
      return {
        sandbox,
        agentUrl: process.env['E2B_SANDBOX_URL'] ?? '',
        routeHeaders: { 'e2b-sandbox-id': sandbox.sandboxId },
        accessToken: await tokenOf(sandbox.sandboxId),
        defaultUser: 'user',
        dir,
        homeRelativeDir: 'kiln-test',
        otherUser: { name: 'user' },
        disposable: true,
        close: async () => {
          await sandbox.kill();
        },
      };
    },
    {
      name: sdk.name,
      CommandExitError,
      NotEnoughSpaceError: mod.NotEnoughSpaceError,
      lacks: { closeStdin: !!sdk.lacks.closeStdin, fileMetadata: !!sdk.lacks.fileMetadata },
    },
  );

  describe(`${sdk.name}: control plane, keys, isolation, egress`, () => {
    it('create with metadata and envs; getInfo, list by metadata, setTimeout, getMetrics, connect, kill', async () => {
      const sbx = await Sandbox.create('base', {
        metadata: { suite: 'e2e', n: '1' },
        envs: { GREETING: 'hej' },
      });
      const other = await Sandbox.create({ metadata: { suite: 'e2e', n: '2' }, timeoutMs: 120_000 });
      assert.equal((await sbx.commands.run('echo "$GREETING from $(whoami)"')).stdout, 'hej from user\n');
      const info = await Sandbox.getInfo(sbx.sandboxId);
      assert.equal(info.sandboxId, sbx.sandboxId);
      assert.equal(info.name, 'base');
      assert.equal(info.state, 'running');
      assert.deepEqual(info.metadata, { suite: 'e2e', n: '1' });
      assert.equal(info.envdVersion, '0.6.13');
      const infoOther = await other.getInfo();
      assert.ok(Math.abs(infoOther.endAt.getTime() - Date.now() - 120_000) < 10_000, 'timeoutMs honoured');
      const listed = await Sandbox.list({ query: { metadata: { suite: 'e2e' } } }).nextItems();
      assert.deepEqual(listed.map((s) => s.sandboxId).sort(), [sbx.sandboxId, other.sandboxId].sort());
      const one = await Sandbox.list({
        query: { metadata: { suite: 'e2e', n: '2' }, state: ['running'] },
      }).nextItems();
      assert.deepEqual(
        one.map((s) => s.sandboxId),
        [other.sandboxId],
      );
      const paged = Sandbox.list({ query: { metadata: { suite: 'e2e' } }, limit: 1 });
      const first = await paged.nextItems();
      assert.equal(first.length, 1);
      assert.equal(paged.hasNext, true, 'X-Next-Token');
      assert.equal((await paged.nextItems()).length, 1);
      await sbx.setTimeout(1_800_000);
      assert.ok((await sbx.getInfo()).endAt.getTime() > Date.now() + 1_700_000);
      const [m] = await sbx.getMetrics();
      assert.ok(m, 'one metrics sample');
      assert.ok(m.memTotal > 100 * 2 ** 20 && m.memUsed > 0 && m.memUsed < m.memTotal, JSON.stringify(m));
      assert.ok(m.diskTotal > 0 && m.diskUsed > 0 && m.cpuCount >= 1);
      // connect: a second handle on the same sandbox sees the same files and processes.
      await sbx.files.write('/tmp/shared.txt', 'from the first handle');
      const again = await Sandbox.connect(sbx.sandboxId);
      assert.equal(await again.files.read('/tmp/shared.txt'), 'from the first handle');
      const bg = await sbx.commands.run('sleep 30', { background: true });
      assert.ok((await again.commands.list()).some((p) => p.pid === bg.pid));
      const attached = await again.commands.connect(bg.pid);
      await again.commands.kill(bg.pid);
      await assert.rejects(attached.wait(), CommandExitError);
      await assert.rejects(
        sbx.commands.run('exit 7'),
        (e: unknown) => e instanceof CommandExitError && e.exitCode === 7,
      );
      assert.equal(await sbx.isRunning(), true, 'isRunning asks envd /health through the proxy');
      await sbx.kill();
      assert.equal(await Sandbox.kill(sbx.sandboxId), false, 'already gone');
      await assert.rejects(Sandbox.getInfo(sbx.sandboxId), NotFound);
      await assert.rejects(Sandbox.connect(sbx.sandboxId), NotFound);
      await assert.rejects(again.commands.run('true'), NotFound, 'envd traffic of a killed sandbox');
      const rest = await Sandbox.list({ query: { metadata: { suite: 'e2e' } } }).nextItems();
      assert.deepEqual(
        rest.map((s) => s.sandboxId),
        [other.sandboxId],
      );
      await other.kill();
    });

    if (sdk.lacks.git)
      it(`${sdk.name} has no sandbox.git, so the git check is not run`, () => {
        assert.equal((Sandbox.prototype as { git?: unknown }).git, undefined);
      });
    else
      it('git helpers: init, configureUser, add, commit, status, createBranch, branches (a sandbox of the E2B client class)', async () => {
        // Releases with git also have the `E2B` client class: its Sandbox is bound to its options.
        const client = new mod.E2B({ apiKey: process.env['E2B_API_KEY'] ?? '' });
        const sbx = await client.Sandbox.create('base');
        // Deprecated by E2B (use commands.run), yet called by code written against 2.x: checked.
        // eslint-disable-next-line @typescript-eslint/no-deprecated
        const git = sbx.git;
        const repo = '/home/user/repo';
        await git.init(repo, { initialBranch: 'main' });
        await git.configureUser('Kiln Test', 'test@kiln.invalid', { scope: 'local', path: repo });
        await sbx.files.write(`${repo}/a.txt`, 'one\n');
        const before = await git.status(repo);
        assert.deepEqual(
          before.fileStatus.map((f) => [f.name, f.status]),
          [['a.txt', 'untracked']],
        );
        await git.add(repo, { all: true });
        await git.commit(repo, 'first');
        const after = await git.status(repo);
        assert.equal(after.currentBranch, 'main');
        assert.deepEqual(after.fileStatus, []);
        await git.createBranch(repo, 'feature');
        const b = await git.branches(repo);
        assert.equal(b.currentBranch, 'feature');
        assert.deepEqual([...b.branches].sort(), ['feature', 'main']);
        const log = await sbx.commands.run(`git -C ${repo} log --format=%an:%s`);
        assert.equal(log.stdout, 'Kiln Test:first\n');
        await sbx.kill();
      });

    it('a wrong API key is AuthenticationError; a wrong sandbox id is SandboxNotFoundError; a revoked key stops working', async () => {
      await assert.rejects(Sandbox.create('base', { apiKey: 'e2b_' + '1'.repeat(40) }), AuthenticationError);
      await assert.rejects(Sandbox.list({ apiKey: 'nope' }).nextItems(), AuthenticationError);
      await assert.rejects(Sandbox.connect('sbx-doesnotexist'), NotFound);
      await assert.rejects(Sandbox.getInfo('sbx-doesnotexist'), NotFound);
      const made = kiln('api-key', 'create', '--name', 'short-lived', '--json');
      assert.equal(made.status, 0, made.stderr);
      const k = JSON.parse(made.stdout) as { id: string; key: string };
      assert.deepEqual(await Sandbox.list({ apiKey: k.key }).nextItems(), []);
      const listed = kiln('api-key', 'list', '--json');
      assert.ok(!listed.stdout.includes(k.key), 'keys are never listed');
      assert.ok((JSON.parse(listed.stdout) as { id: string }[]).some((x) => x.id === k.id));
      assert.equal(kiln('api-key', 'delete', k.id).status, 0);
      await assert.rejects(Sandbox.list({ apiKey: k.key }).nextItems(), AuthenticationError);
    });

    it("API keys are scoped: key B neither lists, connects to, reads nor kills key A's sandbox; the e2b env key (admin) sees it", async () => {
      const mk = (name: string, ...flags: string[]): { id: string; key: string; admin: boolean } => {
        const r = kiln('api-key', 'create', '--name', name, ...flags, '--json');
        assert.equal(r.status, 0, r.stderr);
        return JSON.parse(r.stdout) as { id: string; key: string; admin: boolean };
      };
      const A = mk('key-a');
      const B = mk('key-b');
      assert.deepEqual([A.admin, B.admin], [false, false]);
      const a = await Sandbox.create('base', { apiKey: A.key, metadata: { owner: 'a' } });
      try {
        const ids = async (apiKey: string): Promise<string[]> =>
          (await Sandbox.list({ apiKey, query: { metadata: { owner: 'a' } } }).nextItems()).map(
            (x) => x.sandboxId,
          );
        assert.deepEqual(await ids(B.key), []);
        assert.deepEqual(await ids(A.key), [a.sandboxId]);
        assert.deepEqual(
          await ids(process.env['E2B_API_KEY'] ?? ''),
          [a.sandboxId],
          'the e2b env key is admin',
        );
        await assert.rejects(Sandbox.connect(a.sandboxId, { apiKey: B.key }), NotFound);
        await assert.rejects(Sandbox.getInfo(a.sandboxId, { apiKey: B.key }), NotFound);
        assert.equal(await Sandbox.kill(a.sandboxId, { apiKey: B.key }), false, 'not found for B');
        assert.equal((await Sandbox.getInfo(a.sandboxId, { apiKey: A.key })).state, 'running', 'untouched');
        const listed = JSON.parse(kiln('api-key', 'list', '--json').stdout) as {
          name: string;
          admin: boolean;
        }[];
        assert.deepEqual(
          listed.filter((k) => ['e2b-env', 'key-a'].includes(k.name)).map((k) => [k.name, k.admin]),
          [
            ['e2b-env', true],
            ['key-a', false],
          ],
        );
      } finally {
        assert.equal(await Sandbox.kill(a.sandboxId, { apiKey: A.key }), true);
        for (const k of [A, B]) assert.equal(kiln('api-key', 'delete', k.id).status, 0);
      }
    });

    it("one sandbox's access token cannot reach another sandbox; each signed URL reaches only its own", async () => {
      const a = await Sandbox.create('base');
      const b = await Sandbox.create('base');
      try {
        await a.files.write('/tmp/who', 'a');
        await b.files.write('/tmp/who', 'b');
        const [ta, tb] = [await tokenOf(a.sandboxId), await tokenOf(b.sandboxId)];
        assert.notEqual(ta, tb);
        const proxy = process.env['E2B_SANDBOX_URL'] ?? '';
        const list = (id: string, token: string) =>
          fetch(`${proxy}/process.Process/List`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'e2b-sandbox-id': id, 'x-access-token': token },
            body: '{}',
          });
        assert.equal((await list(b.sandboxId, tb)).status, 200);
        assert.equal((await list(b.sandboxId, ta)).status, 401, "a's token at b");
        const read = (id: string, token: string) =>
          fetch(`${proxy}/files?path=%2Ftmp%2Fwho`, {
            headers: { 'e2b-sandbox-id': id, 'x-access-token': token },
          });
        assert.equal((await read(b.sandboxId, ta)).status, 401);
        assert.equal(await (await read(b.sandboxId, tb)).text(), 'b');
        // Signed URLs carry no sandbox header: each reaches the sandbox whose token signed it.
        assert.equal(await (await fetch(await a.downloadUrl('/tmp/who'))).text(), 'a');
        assert.equal(await (await fetch(await b.downloadUrl('/tmp/who'))).text(), 'b');
        const forged = (await a.downloadUrl('/tmp/who')).replace(/signature=[^&]+/, 'signature=v1_x');
        assert.equal((await fetch(forged)).status, 401);
      } finally {
        await a.kill();
        await b.kill();
      }
    });

    it('allow_internet_access: false cuts guest egress, true keeps it; the host is unreachable either way', async () => {
      // The host's loopback, as QEMU's user-mode network shows it to the guest (10.0.2.2), is
      // refused in each sandbox's network namespace; "the internet" is a test host in a network
      // namespace of the test's own, on a documentation address.
      const srv = createServer((_q, s) => s.end('host says hi'));
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const port = (srv.address() as AddressInfo).port;
      const peer = await startNetPeer();
      const toHost = `timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/${port}; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; tail -n1 <&3'`;
      const toPeer = `curl -s -m 5 -o /dev/null -w '%{http_code}' http://${peer.addr}/ || true`;
      const open = await Sandbox.create('base', { allowInternetAccess: true });
      const closed = await Sandbox.create('base', { allowInternetAccess: false });
      try {
        assert.equal((await open.commands.run(toPeer)).stdout, '200');
        assert.equal((await closed.commands.run(toPeer)).stdout, '000');
        for (const sbx of [open, closed])
          await assert.rejects(
            sbx.commands.run(toHost),
            (e: unknown) => e instanceof CommandExitError && e.exitCode !== 0,
          );
        assert.equal(await internetOf(closed), false);
        assert.equal(
          (await closed.commands.run('echo still served')).stdout,
          'still served\n',
          'the envd forward still works',
        );
      } finally {
        await open.kill();
        await closed.kill();
        srv.close();
        await peer.close();
      }
    });

    it('pause keeps files and processes; connect resumes; a second pause says false', async () => {
      const sbx = await Sandbox.create('base');
      await sbx.files.write('/home/user/p.txt', 'before pause');
      const bg = await sbx.commands.run('sleep 1000', { background: true });
      assert.equal(await pauseOf(sbx), true);
      assert.equal(await pauseOf(sbx), false, 'already paused: 409 -> false');
      assert.equal((await sbx.getInfo()).state, 'paused');
      const paused = await Sandbox.list({ query: { state: ['paused'] } }).nextItems();
      assert.deepEqual(
        paused.map((x) => x.sandboxId),
        [sbx.sandboxId],
      );
      await assert.rejects(sbx.commands.run('true'), 'no autoResume: a paused sandbox does not answer');
      const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 });
      assert.equal(again.sandboxId, sbx.sandboxId);
      assert.equal((await again.getInfo()).state, 'running');
      assert.equal(await again.files.read('/home/user/p.txt'), 'before pause');
      const procs = await again.commands.list();
      assert.ok(
        procs.some((p) => p.pid === bg.pid),
        `background pid ${bg.pid} survived: ${JSON.stringify(procs)}`,
      );
      await again.kill();
    });

    if (sdk.lacks.lifecycle)
      it(`${sdk.name} has no lifecycle option: betaCreate({autoPause}) pauses on timeout; connect resumes it`, async () => {
        const beta = (mod.Sandbox as unknown as { betaCreate: BetaCreate }).betaCreate;
        const sbx = await beta.call(mod.Sandbox, 'base', { timeoutMs: 120_000, autoPause: true });
        await sbx.files.write('/home/user/auto.txt', 'kept');
        // The timeout is cut only now: a loaded machine cannot let it run out before the write.
        await sbx.setTimeout(1000);
        const deadline = Date.now() + 60_000;
        while ((await sbx.getInfo()).state !== 'paused') {
          assert.ok(Date.now() < deadline, 'the reaper paused it');
          await new Promise((r) => setTimeout(r, 500));
        }
        const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 });
        assert.equal((await again.commands.run('cat /home/user/auto.txt')).stdout, 'kept');
        assert.equal((await again.getInfo()).state, 'running');
        await again.kill();
      });
    else
      it('autoPause on timeout, then the next request resumes it (autoResume)', async () => {
        const sbx = await Sandbox.create('base', {
          timeoutMs: 120_000,
          lifecycle: { onTimeout: 'pause', autoResume: true },
        });
        await sbx.files.write('/home/user/auto.txt', 'kept');
        await sbx.setTimeout(1000);
        const deadline = Date.now() + 60_000;
        while ((await sbx.getInfo()).state !== 'paused') {
          assert.ok(Date.now() < deadline, 'the reaper paused it');
          await new Promise((r) => setTimeout(r, 500));
        }
        const r = await sbx.commands.run('cat /home/user/auto.txt');
        assert.equal(r.stdout, 'kept');
        assert.equal((await sbx.getInfo()).state, 'running');
        await sbx.kill();
      });

    if (sdk.lacks.snapshots)
      it(`${sdk.name} has no createSnapshot, listSnapshots, fork or deleteSnapshot, so the two snapshot checks are not run`, () => {
        for (const m of ['createSnapshot', 'listSnapshots', 'fork', 'deleteSnapshot'])
          assert.equal(m in mod.Sandbox, false, m);
      });
    else {
      it('createSnapshot + Sandbox.create(snapshot); listSnapshots; fork into 2; deleteSnapshot', async () => {
        const sbx = await Sandbox.create('base');
        await sbx.files.write('/home/user/s.txt', 'snapped');
        const snap = await sbx.createSnapshot({ name: 'e2e-snap' });
        assert.deepEqual(snap.names, ['e2e-snap']);
        assert.equal((await sbx.getInfo()).state, 'running', 'the source keeps running');
        await sbx.files.write('/home/user/s.txt', 'changed after');
        const fromSnap = await Sandbox.create(snap.snapshotId);
        assert.equal(await fromSnap.files.read('/home/user/s.txt'), 'snapped');
        const byName = await Sandbox.create('e2e-snap');
        assert.equal(await byName.files.read('/home/user/s.txt'), 'snapped');
        const listed = await Sandbox.listSnapshots().nextItems();
        assert.deepEqual(
          listed.map((x) => x.snapshotId),
          [snap.snapshotId],
        );
        const forks = await Sandbox.fork(sbx.sandboxId, { count: 2 });
        assert.equal(forks.length, 2);
        for (const f of forks) {
          assert.ok(f instanceof Sandbox, f instanceof Error ? f.message : 'not a sandbox');
          assert.equal(await f.files.read('/home/user/s.txt'), 'changed after');
          assert.notEqual(f.sandboxId, sbx.sandboxId);
          await f.kill();
        }
        // Independent of its source and its restores: deleted while they run.
        assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
        assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'gone: 404 -> false');
        assert.equal(await fromSnap.files.read('/home/user/s.txt'), 'snapped');
        for (const x of [fromSnap, byName, sbx]) await x.kill();
        await assert.rejects(Sandbox.createSnapshot('sbx-nope'), NotFound);
        await assert.rejects(Sandbox.fork('sbx-nope', { count: 1 }), NotFound);
      });

      it('deleteSnapshot while its sandbox runs: true at once, unlisted, not restorable, name free; the sandbox works on', async () => {
        const sbx = await Sandbox.create('base');
        await sbx.files.write('/home/user/d.txt', 'before');
        const snap = await sbx.createSnapshot({ name: 'e2e-del' });
        await sbx.files.write('/home/user/d.txt', 'after');
        assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
        assert.deepEqual(await Sandbox.listSnapshots().nextItems(), []);
        assert.deepEqual(await sbx.listSnapshots().nextItems(), []);
        for (const ref of [snap.snapshotId, 'e2e-del'])
          await assert.rejects(Sandbox.create(ref), (e: unknown) => {
            assert.ok(e instanceof mod.SandboxError, String(e));
            if (sdk.lacks.statusCode) assert.match(e.message, /^404: /);
            else assert.equal(e.statusCode, 404, e.message);
            return true;
          });
        assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'a second delete: not found');
        // The sandbox runs on over its snapshot's layer, and can take the freed name again.
        assert.equal(await sbx.files.read('/home/user/d.txt'), 'after');
        assert.equal((await sbx.commands.run('cat /home/user/d.txt')).stdout, 'after');
        const again = await sbx.createSnapshot({ name: 'e2e-del' });
        assert.notEqual(again.snapshotId, snap.snapshotId);
        const restored = await Sandbox.create('e2e-del');
        assert.equal(await restored.files.read('/home/user/d.txt'), 'after');
        await restored.kill();
        await sbx.kill();
        assert.equal(await Sandbox.deleteSnapshot(again.snapshotId), true);
      });
    }
  });
}
