/**
 * One behaviour list for kiln's guest agent, driven through the official `e2b` SDK's own client
 * paths. It runs against the agent in-process on the host (unit) and inside a real QEMU guest
 * (integration). The target says which user the default is and where the suite may write.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import {
  CommandExitError,
  FileType,
  FilesystemEventType,
  NotEnoughSpaceError,
  Sandbox,
  type FilesystemEvent,
} from 'e2b';

export interface EnvdTarget {
  sandbox: Sandbox;
  /** Base URL of the agent (for raw HTTP checks): the agent itself, or kiln's envd proxy. */
  agentUrl: string;
  /** Headers that route raw requests to this agent through a proxy (E2b-Sandbox-Id). */
  routeHeaders?: Record<string, string>;
  accessToken: string;
  /** The user commands run as by default, and a scratch directory it owns. */
  defaultUser: string;
  dir: string;
  /** A non-root user of the target, for the permission tests. */
  otherUser: { name: string };
  /** The target is a throwaway VM: its disk may be filled and its clock set (never the test host's). */
  disposable?: boolean;
  close: () => Promise<void>;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(fn: () => T | undefined | Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

export function envdSuite(name: string, make: () => Promise<EnvdTarget>): void {
  describe(`envd via the e2b SDK: ${name}`, { timeout: 600_000 }, () => {
    let t: EnvdTarget;
    let sbx: Sandbox;
    /** fetch on the agent's URL, with the target's routing headers. */
    const agentFetch = (path: string, init: RequestInit = {}): Promise<Response> =>
      fetch(t.agentUrl + path, {
        ...init,
        headers: { ...t.routeHeaders, ...(init.headers as Record<string, string> | undefined) },
      });
    before(async () => {
      t = await make();
      sbx = t.sandbox;
    });
    after(async () => {
      await t.close();
    });

    describe('commands', () => {
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
          assert.ok(e instanceof CommandExitError);
          assert.equal(e.exitCode, 3);
          assert.equal(e.stdout, 'partial\n');
          assert.match(e.error ?? '', /exit status 3/);
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
          assert.ok(e instanceof CommandExitError);
          assert.equal(e.exitCode, -1);
          assert.match(e.error ?? '', /signal: killed/);
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

    describe('files', () => {
      it('write and read text and bytes; ownership is the requesting user', async () => {
        const info = await sbx.files.write(`${t.dir}/a/b/hello.txt`, 'hi there');
        assert.equal(info.path, `${t.dir}/a/b/hello.txt`);
        assert.equal(info.name, 'hello.txt');
        assert.equal(await sbx.files.read(`${t.dir}/a/b/hello.txt`), 'hi there');
        const bytes = new Uint8Array([0, 1, 2, 255, 254]);
        await sbx.files.write(`${t.dir}/bin.dat`, bytes.buffer);
        assert.deepEqual(await sbx.files.read(`${t.dir}/bin.dat`, { format: 'bytes' }), bytes);
        const owner = await sbx.commands.run(`stat -c %U ${t.dir}/a/b/hello.txt ${t.dir}/a/b`);
        assert.equal(owner.stdout, `${t.defaultUser}\n${t.defaultUser}\n`);
        assert.equal(
          await sbx.files.read(`${t.dir}/empty`, { format: 'text' }).catch(() => 'missing'),
          'missing',
        );
        await sbx.files.write(`${t.dir}/empty`, '');
        assert.equal(await sbx.files.read(`${t.dir}/empty`), '');
      });

      it('a 10 MB file round-trips byte-identical, plain and gzip', async () => {
        const big = randomBytes(10 * 1024 * 1024);
        await sbx.files.write(
          `${t.dir}/big.bin`,
          big.buffer.slice(big.byteOffset, big.byteOffset + big.byteLength),
        );
        const back = await sbx.files.read(`${t.dir}/big.bin`, { format: 'bytes' });
        assert.equal(sha(back), sha(big));
        await sbx.files.write(
          `${t.dir}/big.gz.bin`,
          big.buffer.slice(big.byteOffset, big.byteOffset + big.byteLength),
          { gzip: true },
        );
        const back2 = await sbx.files.read(`${t.dir}/big.gz.bin`, { format: 'bytes', gzip: true });
        assert.equal(sha(back2), sha(big));
      });

      it('list, exists, getInfo, makeDir, rename, remove', async () => {
        assert.equal(await sbx.files.makeDir(`${t.dir}/d1/d2`), true);
        assert.equal(await sbx.files.makeDir(`${t.dir}/d1/d2`), false, 'already there');
        await sbx.files.write(`${t.dir}/d1/f.txt`, '12345');
        const top = await sbx.files.list(`${t.dir}/d1`);
        assert.deepEqual(
          top.map((e) => [e.name, e.type]),
          [
            ['d2', FileType.DIR],
            ['f.txt', FileType.FILE],
          ],
        );
        const info = await sbx.files.getInfo(`${t.dir}/d1/f.txt`);
        assert.equal(info.size, 5);
        assert.equal(info.type, FileType.FILE);
        assert.equal(info.path, `${t.dir}/d1/f.txt`);
        assert.equal(info.owner, t.defaultUser);
        assert.match(info.permissions, /^-rw/);
        assert.ok(
          info.modifiedTime instanceof Date && Math.abs(info.modifiedTime.getTime() - Date.now()) < 120_000,
        );
        await sbx.files.write(`${t.dir}/d1/d2/deep.txt`, 'x');
        const deep = await sbx.files.list(`${t.dir}/d1`, { depth: 2 });
        assert.ok(deep.some((e) => e.path === `${t.dir}/d1/d2/deep.txt`));
        const moved = await sbx.files.rename(`${t.dir}/d1/f.txt`, `${t.dir}/d3/g.txt`);
        assert.equal(moved.path, `${t.dir}/d3/g.txt`);
        assert.equal(await sbx.files.exists(`${t.dir}/d1/f.txt`), false);
        assert.equal(await sbx.files.read(`${t.dir}/d3/g.txt`), '12345');
        await sbx.files.remove(`${t.dir}/d1`);
        assert.equal(await sbx.files.exists(`${t.dir}/d1`), false);
        await sbx.files.remove(`${t.dir}/never-existed`);
      });

      it('missing paths are FileNotFound / NotFound errors', async () => {
        await assert.rejects(
          sbx.files.read(`${t.dir}/nope.txt`),
          (e: Error) => e.name === 'FileNotFoundError' || e.name === 'NotFoundError',
        );
        await assert.rejects(sbx.files.getInfo(`${t.dir}/nope.txt`), (e: Error) => /NotFound/.test(e.name));
        await assert.rejects(sbx.files.list(`${t.dir}/nope`), (e: Error) => /NotFound/.test(e.name));
        await assert.rejects(sbx.files.rename(`${t.dir}/nope`, `${t.dir}/x`), (e: Error) =>
          /NotFound/.test(e.name),
        );
      });

      it('watchDir reports creates, writes and removes, recursively', async () => {
        await sbx.files.makeDir(`${t.dir}/w/sub`);
        const events: FilesystemEvent[] = [];
        const h = await sbx.files.watchDir(`${t.dir}/w`, (e) => void events.push(e), { recursive: true });
        await sbx.files.write(`${t.dir}/w/new.txt`, 'a');
        await sbx.files.write(`${t.dir}/w/sub/inner.txt`, 'b');
        await sbx.files.remove(`${t.dir}/w/new.txt`);
        await until(
          () =>
            events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE) || undefined,
        );
        await until(() => events.some((e) => e.name === 'sub/inner.txt') || undefined);
        assert.ok(
          events.some(
            (e) =>
              e.name === 'new.txt' &&
              (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE),
          ),
        );
        await h.stop();
      });

      it('signed upload and download URLs work without the token header; a wrong signature is 401', async () => {
        const up = await sbx.uploadUrl(`${t.dir}/signed.txt`, { useSignatureExpiration: 60_000 });
        const form = new FormData();
        form.append('file', new Blob(['signed body']), `${t.dir}/signed.txt`);
        const r = await fetch(up, { method: 'POST', body: form });
        assert.equal(r.status, 200, await r.clone().text());
        const down = await sbx.downloadUrl(`${t.dir}/signed.txt`);
        assert.equal(await (await fetch(down)).text(), 'signed body');
        const bad = down.replace(/signature=[^&]+/, 'signature=v1_forged');
        const br = await fetch(bad);
        assert.equal(br.status, 401);
        assert.match(((await br.json()) as { message: string }).message, /invalid signature/);
      });

      it('an upload to a full disk is NotEnoughSpaceError and leaves nothing partial; the agent keeps serving', async (c) => {
        if (!t.disposable) {
          c.skip("only on a throwaway VM's own disk");
          return;
        }
        const fill = '/var/tmp/kiln-fill';
        try {
          // Fill what even root may use: most of it at once, the rest (ext4 keeps some clusters
          // in reserve) by writing until the disk refuses.
          await sbx.commands.run(
            `free=$(( $(stat -f -c '%f*%S' /) )); fallocate -l $(( free - 64*1024*1024 )) ${fill}; dd if=/dev/zero of=${fill}.2 bs=1M 2>/dev/null; sync; true`,
            { user: 'root', timeoutMs: 120_000 },
          );
          const big = randomBytes(40 * 1024 * 1024);
          await assert.rejects(
            sbx.files.write(
              `${t.dir}/toolarge.bin`,
              big.buffer.slice(big.byteOffset, big.byteOffset + big.byteLength),
            ),
            (e: Error) => e instanceof NotEnoughSpaceError,
          );
          assert.equal(await sbx.files.exists(`${t.dir}/toolarge.bin`), false);
          assert.equal(
            (await sbx.commands.run(`ls -A ${t.dir} | grep -c kiln-upload || true`)).stdout,
            '0\n',
          );
          // A declared 1 GB upload is refused at once, before its body is sent.
          const t0 = Date.now();
          let sent = 0;
          const body = new ReadableStream<Uint8Array>({
            pull(ctl) {
              if (sent >= 2 ** 30) ctl.close();
              else {
                sent += 1 << 20;
                ctl.enqueue(new Uint8Array(1 << 20));
              }
            },
          });
          const r = await agentFetch(`/files?path=${encodeURIComponent(`${t.dir}/huge.bin`)}`, {
            method: 'POST',
            headers: {
              'content-type': 'application/octet-stream',
              'content-length': String(2 ** 30),
              'x-access-token': t.accessToken,
            },
            body,
            duplex: 'half',
          });
          assert.equal(r.status, 507);
          assert.match(((await r.json()) as { message: string }).message, /not enough disk space/);
          assert.ok(Date.now() - t0 < 30_000, 'refused without reading the gigabyte');
          assert.equal(await sbx.files.exists(`${t.dir}/huge.bin`), false);
        } finally {
          await sbx.commands.run(`rm -f ${fill} ${fill}.2`, { user: 'root' });
        }
        assert.equal((await sbx.commands.run('echo still-serving')).stdout, 'still-serving\n');
      });

      it('raw octet-stream upload with gzip; a corrupt gzip body is 400 and leaves no file', async () => {
        const ok = await agentFetch(`/files?path=${encodeURIComponent(`${t.dir}/raw.txt`)}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/octet-stream',
            'content-encoding': 'gzip',
            'x-access-token': t.accessToken,
          },
          body: gzipSync('zipped'),
        });
        assert.equal(ok.status, 200);
        assert.equal(await sbx.files.read(`${t.dir}/raw.txt`), 'zipped');
        const bad = await agentFetch(`/files?path=${encodeURIComponent(`${t.dir}/corrupt.txt`)}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/octet-stream',
            'content-encoding': 'gzip',
            'x-access-token': t.accessToken,
          },
          body: Buffer.from('this is not gzip'),
        });
        assert.equal(bad.status, 400);
        assert.equal(await sbx.files.exists(`${t.dir}/corrupt.txt`), false);
        const left = await sbx.commands.run(`ls -A ${t.dir} | grep kiln-upload || true`);
        assert.equal(left.stdout, '', 'no temp upload file left');
      });
    });

    describe('pty', () => {
      it('create, sendInput, resize, and kill', async () => {
        let out = '';
        const dec = new TextDecoder();
        const h = await sbx.pty.create({
          cols: 80,
          rows: 24,
          onData: (d) => void (out += dec.decode(d)),
          timeoutMs: 60_000,
        });
        await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size; echo "tty=$(tty)"\n'));
        await until(() => (/24 80/.test(out) && /tty=\/dev\/pts\//.test(out)) || undefined);
        await sbx.pty.resize(h.pid, { cols: 120, rows: 40 });
        await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'));
        await until(() => /40 120/.test(out) || undefined);
        assert.equal(await sbx.pty.kill(h.pid), true);
        await assert.rejects(h.wait(), CommandExitError);
      });
    });

    describe('protocol and security', () => {
      it('requests without the access token are 401; a token is not accepted by another agent state', async () => {
        const r = await agentFetch(`/process.Process/List`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{}',
        });
        assert.equal(r.status, 401);
        const w = await agentFetch(`/envs`, { headers: { 'x-access-token': 'wrong' } });
        assert.equal(w.status, 401);
        const h = await agentFetch(`/health`);
        assert.equal(h.status, 204, '/health needs no token');
      });

      it('unknown methods, malformed JSON and a non-existent user get clear errors and the agent keeps serving', async () => {
        const hdr = { 'content-type': 'application/json', 'x-access-token': t.accessToken };
        const unknown = await agentFetch(`/process.Process/Nope`, {
          method: 'POST',
          headers: hdr,
          body: '{}',
        });
        assert.equal(unknown.status, 404);
        const bad = await agentFetch(`/filesystem.Filesystem/Stat`, {
          method: 'POST',
          headers: hdr,
          body: '{not json',
        });
        assert.equal(bad.status, 400);
        assert.equal(((await bad.json()) as { code: string }).code, 'invalid_argument');
        const badProto = await agentFetch(`/filesystem.Filesystem/Stat`, {
          method: 'POST',
          headers: { 'content-type': 'application/proto', 'x-access-token': t.accessToken },
          body: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0x0f]),
        });
        assert.ok(badProto.status >= 400, `malformed protobuf refused (${badProto.status})`);
        assert.match(((await badProto.json()) as { message: string }).message, /parse binary/);
        const goodProto = await agentFetch(`/filesystem.Filesystem/Stat`, {
          method: 'POST',
          headers: { 'content-type': 'application/proto', 'x-access-token': t.accessToken },
          body: new Uint8Array([0x0a, 0x01, 0x2f]), // StatRequest{path: "/"}
        });
        assert.equal(goodProto.status, 200, 'the binary encoding works too');
        assert.equal(goodProto.headers.get('content-type'), 'application/proto');
        const missing = await agentFetch(`/filesystem.Filesystem/Stat`, {
          method: 'POST',
          headers: hdr,
          body: '{"path":"/no/such"}',
        });
        assert.equal(missing.status, 404);
        await assert.rejects(
          sbx.commands.run('true', { user: 'nobody-here' }),
          /invalid username|unauthenticated|Authentication/i,
        );
        const noUser = await agentFetch(`/files?path=/etc/hostname&username=nobody-here`, {
          headers: { 'x-access-token': t.accessToken },
        });
        assert.equal(noUser.status, 401);
        const env = await agentFetch(`/envs`, { headers: { 'x-access-token': t.accessToken } });
        assert.equal(env.status, 200);
        assert.equal(((await env.json()) as Record<string, string>)['KILN_INIT_VAR'], 'from-init');
        const m = (await (
          await agentFetch(`/metrics`, { headers: { 'x-access-token': t.accessToken } })
        ).json()) as Record<string, number>;
        assert.ok((m['mem_total'] ?? 0) > 0 && (m['disk_total'] ?? 0) > 0 && (m['cpu_count'] ?? 0) >= 1);
        assert.equal(
          (await sbx.commands.run('echo $KILN_INIT_VAR')).stdout,
          'from-init\n',
          '/init env vars reach commands',
        );
      });

      it('/init sets the guest clock from the host time it carries (as after a snapshot restore)', async (c) => {
        if (!t.disposable) {
          c.skip("only on a throwaway VM's own clock");
          return;
        }
        const ahead = Date.now() + 3 * 3600_000; // pretend the host is 3 h ahead of the guest
        const r = await agentFetch(`/init`, {
          method: 'POST',
          headers: { 'x-access-token': t.accessToken },
          body: JSON.stringify({
            accessToken: t.accessToken,
            envVars: { KILN_INIT_VAR: 'from-init' },
            timestamp: new Date(ahead).toISOString(),
          }),
        });
        assert.equal(r.status, 204);
        const guest = Number((await sbx.commands.run('date +%s')).stdout.trim()) * 1000;
        assert.ok(
          Math.abs(guest - ahead) < 120_000,
          `guest clock ${new Date(guest).toISOString()} ~ ${new Date(ahead).toISOString()}`,
        );
        const replay = await agentFetch(`/init`, {
          method: 'POST',
          headers: { 'x-access-token': t.accessToken },
          body: JSON.stringify({
            accessToken: 'stolen',
            timestamp: new Date(Date.now() - 3600_000).toISOString(),
          }),
        });
        assert.equal(replay.status, 204);
        const still = await agentFetch(`/envs`, { headers: { 'x-access-token': t.accessToken } });
        assert.equal(still.status, 200, 'an older /init (a replay) changed nothing');
      });

      it('paths cannot escape what a non-root user may read or write', async () => {
        const other = t.otherUser.name;
        await assert.rejects(sbx.files.read('/etc/shadow', { user: other }), /permission denied|403/i);
        await assert.rejects(
          sbx.files.write('/etc/kiln-evil', 'x', { user: other }),
          /permission denied|403/i,
        );
        await assert.rejects(sbx.files.read('/etc/../etc/shadow', { user: other }), /permission denied|403/i);
        // A symlink the user can reach, pointing where the user cannot go.
        const link = `/tmp/kiln-rootlink-${process.pid}-${Date.now()}`;
        await sbx.commands.run(`ln -sfn /root ${link}`, { user: 'root' });
        try {
          await assert.rejects(sbx.files.list(link, { user: other }), /permission denied/i);
          await assert.rejects(
            sbx.files.write(`${link}/planted`, 'x', { user: other }),
            /permission denied|403/i,
          );
          assert.equal(await sbx.files.exists('/root/planted', { user: 'root' }), false);
        } finally {
          await sbx.commands.run(`rm -f ${link}`, { user: 'root' });
        }
        assert.equal(
          await sbx.files.read('/etc/hostname', { user: other }).then(() => 'readable'),
          'readable',
          'what others may read stays readable',
        );
      });
    });
  });
}
