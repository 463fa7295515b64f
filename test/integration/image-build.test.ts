/**
 * `kiln image build` for real (debootstrap, the Debian kernel, mkfs.ext4): an interrupted build
 * leaves nothing that looks like an image and a re-run produces a correct one; the same inputs
 * reuse the cache; a changed package list rebuilds.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/core/config.ts';
import { buildImage, sha256File } from '../../src/images/build.ts';
import { imagesDir, resolveImage } from '../../src/images/registry.ts';
import { DEFAULT_PACKAGES, defaultImageSpec } from '../../src/images/spec.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** debugfs output, stdout and stderr together (it reports a missing file on stderr). */
const debugfs = (img: string, req: string): string => {
  const r = spawnSync('debugfs', ['-R', req, img], { encoding: 'utf8' });
  return r.stdout + r.stderr;
};

describe('image build', () => {
  let cacheDir: string;
  const debCacheDir = join(loadConfig().cacheDir, 'debs'); // downloads are shared; images are not
  const spec = defaultImageSpec({ name: 'it-img', packages: [...DEFAULT_PACKAGES, 'less'] });
  before(async () => {
    cacheDir = await mkdtemp('/var/tmp/kiln-imgtest-');
  });
  after(async () => {
    await rm(cacheDir, { recursive: true, force: true });
  });

  it('SIGINT mid-way leaves no image, no temp dir, no mount and no process behind', async () => {
    const child = spawn(process.execPath, [CLI, 'image', 'build', '--name', 'it-img', '--package', 'less'], {
      env: { ...process.env, KILN_CACHE_DIR: cacheDir, KILN_DEB_CACHE_DIR: debCacheDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    let sent = false;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      // Interrupt once debootstrap works inside the chroot (its /proc mounted, dpkg running).
      if (!sent && /rootfs: (Installing|Configuring|Unpacking) (core|required|base)/.test(err)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.ok(sent, `the build reached debootstrap's install stage:\n${err}`);
    assert.equal(code, 130, err);
    assert.match(err, /cancelled/);
    const left = await readdir(imagesDir(cacheDir)).catch(() => [] as string[]);
    assert.deepEqual(
      left.filter((f) => f.startsWith('.tmp-')),
      [],
      'temp build dir removed',
    );
    assert.equal(existsSync(join(imagesDir(cacheDir), 'by-name', 'it-img.json')), false);
    await assert.rejects(resolveImage(cacheDir, 'it-img'), { code: 'not_found' });
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(cacheDir), 'nothing mounted under the cache');
    const procs = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assert.ok(
      !procs.split('\n').some((l) => l.includes(cacheDir) && !l.startsWith('ps ')),
      `no builder left:\n${procs}`,
    );
  });

  let firstKey = '';
  it('a re-run builds a complete, correct image', async () => {
    const steps: string[] = [];
    const res = await buildImage({
      spec,
      cacheDir,
      debCacheDir,
      onProgress: (p) => p.phase === 'done' && steps.push(p.step),
    });
    assert.equal(res.cached, false);
    assert.deepEqual(steps, [
      'preflight',
      'kernel',
      'initramfs',
      'rootfs',
      'customise',
      'filesystem',
      'finish',
    ]);
    firstKey = res.manifest.key;
    const img = await resolveImage(cacheDir, 'it-img');
    assert.equal(img.key, firstKey);
    assert.equal(await sha256File(img.kernel), img.manifest.files.kernel.sha256);
    assert.equal(await sha256File(img.initrd), img.manifest.files.initrd.sha256);
    assert.equal(await sha256File(img.rootfs), img.manifest.files.rootfs.sha256);
    assert.match(debugfs(img.rootfs, 'cat /etc/passwd'), /^user:x:1000:1000::\/home\/user:\/bin\/bash$/m);
    assert.match(
      debugfs(img.rootfs, 'cat /etc/sudoers.d/90-kiln-user'),
      /user ALL=\(ALL:ALL\) NOPASSWD: ALL/,
    );
    assert.match(debugfs(img.rootfs, 'stat /opt/kiln/agent.mjs'), /Type: regular/);
    assert.match(
      debugfs(img.rootfs, 'stat /usr/bin/less'),
      /Type: regular/,
      'the extra package is installed',
    );
    assert.match(debugfs(img.rootfs, 'stat /usr/bin/catatonit'), /Type: regular/);
    assert.match(debugfs(img.rootfs, 'stat /opt/kiln/bin/node'), /Type: regular/, "the agent's Node runtime");
    assert.match(
      debugfs(img.rootfs, 'cat /sbin/kiln-init'),
      /catatonit -- \/opt\/kiln\/bin\/node --jitless \/opt\/kiln\/agent\.mjs/,
    );
    assert.equal((await readdir(imagesDir(cacheDir))).filter((f) => f.startsWith('.tmp-')).length, 0);
  });

  it('the same inputs reuse the cache', async () => {
    const t0 = Date.now();
    const res = await buildImage({ spec, cacheDir, debCacheDir });
    assert.equal(res.cached, true);
    assert.equal(res.manifest.key, firstKey);
    assert.ok(Date.now() - t0 < 20_000, 'no rebuild');
  });

  it('a changed package list rebuilds under a new key', async () => {
    const res = await buildImage({ spec: { ...spec, packages: DEFAULT_PACKAGES }, cacheDir, debCacheDir });
    assert.equal(res.cached, false);
    assert.notEqual(res.manifest.key, firstKey);
    const img = await resolveImage(cacheDir, 'it-img');
    assert.equal(img.key, res.manifest.key, 'the name now points to the new image');
    assert.match(debugfs(img.rootfs, 'stat /usr/bin/less'), /File not found by ext2_lookup/);
    assert.ok(
      existsSync(join(imagesDir(cacheDir), firstKey, 'manifest.json')),
      'the old image is still intact',
    );
  });
});
