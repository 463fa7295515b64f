/**
 * OCI images as a base, end to end with real components: Debian's docker-registry on loopback,
 * an image made by umoci (two layers, a whiteout) and pushed by skopeo (gzip and zstd), pulled
 * and turned into a kiln image, then booted under QEMU with the real agent and e2b SDK.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/core/config.ts';
import { buildImageFromOci, type OciBuildResult } from '../../src/images/oci/build-oci.ts';
import { buildImageFromOciInChild } from '../../src/images/oci/build-oci-child.ts';
import { resolveOciImage, unpackOciImage } from '../../src/images/oci/pull.ts';
import { imageByKey } from '../../src/images/registry.ts';
import { bootAgentVm } from '../helpers/guest.ts';
import { pushTestImage, startRegistry, type LocalRegistry } from '../helpers/oci-registry.ts';

// Images of this test go to its own cache (umoci stamps times, so each run is a new image);
// the kernel .deb comes from the shared one.
const sharedCache = loadConfig().cacheDir;
let dir: string;
let cacheDir: string;
let reg: LocalRegistry;
let ref: string;

before(async () => {
  dir = await mkdtemp('/tmp/kiln-oci-it-');
  cacheDir = join(dir, 'cache');
  reg = await startRegistry(dir);
  ref = `${reg.registry}/kiln/oci-test:t`;
  await pushTestImage(dir, reg.registry, sharedCache, 'kiln/oci-test:t');
});
after(async () => {
  await reg.close();
  await rm(dir, { recursive: true, force: true });
});

describe('OCI image from a local docker-registry', () => {
  it('pulls the zstd-compressed push: whiteout applied, layer 2 present', async () => {
    const img = await resolveOciImage(`${ref}-zstd`, { cacheDir });
    assert.ok(
      img.manifest.layers.every((l) => l.compression === 'zstd'),
      JSON.stringify(img.manifest.layers),
    );
    await unpackOciImage(img, join(dir, 'zroot'), { cacheDir });
    assert.equal(readFileSync(join(dir, 'zroot/srv/app/marker'), 'utf8'), 'from the OCI image\n');
    assert.equal(existsSync(join(dir, 'zroot/etc/doomed')), false);
    assert.ok(existsSync(join(dir, 'zroot/bin/bash')));
  });

  let built: OciBuildResult;
  it('builds a kiln image from it (in a child, as kilnd would) and returns the config defaults', async () => {
    const steps: string[] = [];
    built = await buildImageFromOciInChild({
      reference: ref,
      name: 'oci-test',
      cacheDir,
      debCacheDir: join(sharedCache, 'debs'),
      onProgress: (p) => {
        steps.push(`${p.step} ${p.phase} ${p.message}`);
        if (p.phase !== 'detail')
          process.stderr.write(`# oci image [${p.index}/${p.total}] ${p.step}: ${p.message}\n`);
      },
    });
    assert.equal(built.cached, false);
    assert.deepEqual(
      {
        env: built.oci.config.env.includes('GREETING=hello'),
        workdir: built.oci.config.workdir,
        cmd: built.oci.config.cmd,
      },
      { env: true, workdir: '/srv/app', cmd: ['cat', '/srv/app/marker'] },
    );
    assert.ok(
      steps.some((s) => /^layers detail layer 2\/2: extracted \d+ entries, 1 whiteouts/.test(s)),
      steps.join('\n'),
    );
    assert.ok(steps.some((s) => s.startsWith('customise done') && s.includes('added (uid 1000)')));
    assert.deepEqual(built.manifest.oci?.digest, built.oci.digest);
    const again = await buildImageFromOci({
      reference: ref,
      name: 'oci-test',
      cacheDir,
      debCacheDir: join(sharedCache, 'debs'),
    });
    assert.equal(again.cached, true);
    assert.equal(again.manifest.key, built.manifest.key);
  });

  it('boots it: the sandbox sees the image files as user "user"', async () => {
    const vm = await bootAgentVm({ image: await imageByKey(cacheDir, built.manifest.key) });
    try {
      const r = await vm.sandbox.commands.run(
        'cat /srv/app/marker; test -e /etc/doomed || echo doomed-gone; id -un; id -u; echo "$HOME"',
      );
      assert.equal(r.stdout, 'from the OCI image\ndoomed-gone\nuser\n1000\n/home/user\n');
    } finally {
      await vm.close();
    }
  });
});
