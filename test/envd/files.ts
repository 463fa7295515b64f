/**
 * The envd suite (envd.suite.ts), files: read and write, ownership, listing, watching, uploads and
 * downloads, limits.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { before, describe, it } from 'node:test';
import { FileType, FilesystemEventType, type FilesystemEvent, type Sandbox } from 'e2b';
import { fetchAgent, type Current, sha, until } from './helpers.ts';
import type { EnvdTarget } from './envd.suite.ts';

export function filesTests(current: () => Current): void {
  describe('files', () => {
    let t: EnvdTarget, sbx: Sandbox;
    before(() => ({ t, sbx } = current()));
    const agentFetch = (path: string, init?: RequestInit): Promise<Response> => fetchAgent(t, path, init);

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
        () => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE) || undefined,
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

    it('a multi-file write keeps the directory of each part (relative to home), makes parents, answers in request order', async () => {
      // Relative paths resolve against the user's home, like envd: t.homeRelativeDir is t.dir from there.
      const base = t.homeRelativeDir ?? t.dir;
      const files = [
        { path: `${base}/multi/nested_dir/sub/a2.txt`, data: 'second level' },
        { path: `${base}/multi/top.txt`, data: 'x'.repeat(300_000) },
        { path: `${base}/multi/other/b.txt`, data: 'b' },
      ];
      const written = await sbx.files.write(files);
      assert.deepEqual(
        written.map((w) => [w.name, w.path]),
        [
          ['a2.txt', `${t.dir}/multi/nested_dir/sub/a2.txt`],
          ['top.txt', `${t.dir}/multi/top.txt`],
          ['b.txt', `${t.dir}/multi/other/b.txt`],
        ],
      );
      assert.equal(await sbx.files.read(`${t.dir}/multi/nested_dir/sub/a2.txt`), 'second level');
      assert.equal((await sbx.files.read(`${t.dir}/multi/top.txt`)).length, 300_000);
      assert.equal(await sbx.files.read(`${t.dir}/multi/other/b.txt`), 'b');
      const owner = await sbx.commands.run(
        `stat -c %U ${t.dir}/multi/nested_dir/sub ${t.dir}/multi/nested_dir`,
      );
      assert.equal(owner.stdout, `${t.defaultUser}\n${t.defaultUser}\n`);
    });

    it('a signed upload whose multipart part has no filename is written to the signed path', async () => {
      const up = await sbx.uploadUrl(`${t.dir}/nofilename.txt`, { useSignatureExpiration: 60_000 });
      const form = new FormData();
      form.append('file', 'plain field body \u00e9\u0000\u00ff'); // no filename: like curl -F 'file=<x'
      const r = await fetch(up, { method: 'POST', body: form });
      assert.equal(r.status, 200, await r.clone().text());
      const [w] = (await r.json()) as { path: string; name: string }[];
      assert.equal(w?.path, `${t.dir}/nofilename.txt`);
      assert.equal(await sbx.files.read(`${t.dir}/nofilename.txt`), 'plain field body \u00e9\u0000\u00ff');
    });

    it('file metadata: written as X-Metadata-* headers, shown by list and getInfo, kept across rename, replaced by an overwrite', async () => {
      if (current().sdk.lacks.fileMetadata) {
        const opts: Record<string, unknown> = { metadata: { a: 'b' } };
        const w = await sbx.files.write(`${t.dir}/md-old.txt`, 'x', opts);
        assert.equal(
          (w as { metadata?: unknown }).metadata,
          undefined,
          `${current().sdk.name} sends no metadata`,
        );
        return;
      }
      const w = await sbx.files.write(`${t.dir}/md/one.txt`, 'payload', {
        metadata: { Owner: 'alice', 'build-id': '42 and more' },
      });
      assert.deepEqual(w.metadata, { owner: 'alice', 'build-id': '42 and more' });
      assert.deepEqual((await sbx.files.getInfo(`${t.dir}/md/one.txt`)).metadata, {
        owner: 'alice',
        'build-id': '42 and more',
      });
      await sbx.files.write(`${t.dir}/md/plain.txt`, 'no metadata');
      const listed = await sbx.files.list(`${t.dir}/md`);
      assert.deepEqual(
        listed.map((e) => [e.name, e.metadata]),
        [
          ['one.txt', { owner: 'alice', 'build-id': '42 and more' }],
          ['plain.txt', undefined],
        ],
      );
      const xattr = await sbx.commands.run(
        `python3 -c "import os,sys; print(os.getxattr(sys.argv[1], 'user.e2b.owner').decode())" ${t.dir}/md/one.txt`,
      );
      assert.equal(xattr.stdout, 'alice\n', 'stored as a user.e2b.* extended attribute');
      const moved = await sbx.files.rename(`${t.dir}/md/one.txt`, `${t.dir}/md/moved.txt`);
      assert.deepEqual(moved.metadata, { owner: 'alice', 'build-id': '42 and more' });
      await sbx.files.write(`${t.dir}/md/moved.txt`, 'again', { metadata: { only: 'this' } });
      assert.deepEqual((await sbx.files.getInfo(`${t.dir}/md/moved.txt`)).metadata, { only: 'this' });
      const many = await sbx.files.write(
        [
          { path: `${t.dir}/md/m1.txt`, data: '1' },
          { path: `${t.dir}/md/m2.txt`, data: '2' },
        ],
        { metadata: { batch: 'yes' } },
      );
      assert.deepEqual(
        many.map((e) => e.metadata),
        [{ batch: 'yes' }, { batch: 'yes' }],
      );
      const bad = await fetchAgent(t, `/files?path=${encodeURIComponent(`${t.dir}/md/bad.txt`)}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/octet-stream',
          'x-access-token': t.accessToken,
          'x-metadata-k': 'v'.repeat(5000),
        },
        body: 'x',
      });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { message: string }).message, /metadata/);
      assert.equal(await sbx.files.exists(`${t.dir}/md/bad.txt`), false);
    });

    it('watchDir (not recursive) reports a write when an upload overwrites a file, and no temporary files', async () => {
      await sbx.files.makeDir(`${t.dir}/wo`);
      await sbx.files.write(`${t.dir}/wo/target.txt`, 'first');
      const events: FilesystemEvent[] = [];
      const h = await sbx.files.watchDir(`${t.dir}/wo`, (e) => void events.push(e));
      await sbx.files.write(`${t.dir}/wo/target.txt`, 'second');
      await sbx.files.write(`${t.dir}/wo/marker.txt`, 'm');
      await until(
        () =>
          events.some((e) => e.name === 'marker.txt' && e.type === FilesystemEventType.WRITE) || undefined,
      );
      await h.stop();
      assert.deepEqual(
        events.filter((e) => e.name === 'target.txt').map((e) => e.type),
        [FilesystemEventType.WRITE],
        'an overwrite is a write of the file, as envd reports it',
      );
      assert.deepEqual(
        events.filter((e) => e.name === 'marker.txt').map((e) => e.type),
        [FilesystemEventType.CREATE, FilesystemEventType.WRITE],
        'a new file is created, then written',
      );
      assert.deepEqual(
        events.filter((e) => e.name !== 'target.txt' && e.name !== 'marker.txt'),
        [],
        "kiln's temporary upload files are not reported",
      );
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
          (e: Error) => e instanceof current().sdk.NotEnoughSpaceError,
        );
        assert.equal(await sbx.files.exists(`${t.dir}/toolarge.bin`), false);
        assert.equal((await sbx.commands.run(`ls -A ${t.dir} | grep -c kiln-upload || true`)).stdout, '0\n');
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
}
