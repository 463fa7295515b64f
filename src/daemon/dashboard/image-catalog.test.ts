import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { TemplateRecord } from '../../core/domain.ts';
import { ServiceFixture } from '../testing/fixtures.ts';
import { stageImage } from '../testing/images.ts';
import { ImageCatalog } from './image-catalog.ts';

const DEB = 'a'.repeat(32);
const OCI = 'b'.repeat(32);
const UNUSED = 'c'.repeat(32);

let f: ServiceFixture;

const template = (name: string, imageKey: string, ownerKeyId: string | null): TemplateRecord => ({
  id: `tpl-${name}`,
  name,
  imageKey,
  memoryMiB: 512,
  vcpus: 1,
  snapshotId: null,
  createdAt: '2026-06-01T00:00:00.000Z',
  ownerKeyId,
});

describe('the images of the cache, for the dashboard', () => {
  beforeEach(async () => {
    f = await ServiceFixture.start();
    const cache = join(f.dir, 'cache');
    await stageImage(cache, DEB, { name: 'default', createdAt: '2026-06-01T00:00:00.000Z' });
    await stageImage(cache, OCI, {
      name: 'oci-registry-app-1',
      createdAt: '2026-06-02T00:00:00.000Z',
      oci: { reference: '127.0.0.1:5000/app:1', digest: `sha256:${'d'.repeat(64)}` },
    });
    await stageImage(cache, UNUSED, { createdAt: '2026-06-03T00:00:00.000Z' });
    // Neither an unfinished image (no manifest yet) nor a build's work dir is an image.
    await stageImage(cache, 'e'.repeat(32), { incomplete: true });
    await mkdir(join(cache, 'images', `.tmp-${'f'.repeat(32)}-1-abcd`));
    f.store.putTemplate(template('base', DEB, null));
    f.store.putTemplate(template(`kiln-img-${OCI}`, OCI, null));
    f.store.putTemplate(template('app', OCI, 'key-b'));
    f.store.putTemplate(template('mine', DEB, 'key-a'));
  });
  afterEach(async () => {
    await f.close();
  });

  it('an admin (or the socket) sees every complete image, newest first, with names, source, size and templates', async () => {
    const cat = new ImageCatalog({ svc: f.svc, cacheDir: join(f.dir, 'cache') });
    const all = await cat.list(undefined);
    assert.deepEqual(
      all.map((i) => [i.key, i.names, i.source, i.templates]),
      [
        [UNUSED, [], 'debian bookworm', []],
        [OCI, ['oci-registry-app-1'], '127.0.0.1:5000/app:1', ['app', `kiln-img-${OCI}`]],
        [DEB, ['default'], 'debian bookworm', ['base', 'mine']],
      ],
    );
    assert.equal(all[1]?.digest, `sha256:${'d'.repeat(64)}`);
    assert.equal(all[2]?.kernel, '6.1.0-test-amd64');
    assert.ok(
      all.every((i) => i.diskBytes > 0),
      'allocated bytes on disk',
    );
    assert.deepEqual(await cat.list({ keyId: 'key-x', admin: true }), all);
  });

  it("a plain key sees only the images its visible templates boot from, not kiln's hidden ones", async () => {
    const cat = new ImageCatalog({ svc: f.svc, cacheDir: join(f.dir, 'cache') });
    const a = await cat.list({ keyId: 'key-a', admin: false });
    assert.deepEqual(
      a.map((i) => [i.key, i.templates]),
      [[DEB, ['base', 'mine']]],
    );
    const b = await cat.list({ keyId: 'key-b', admin: false });
    assert.deepEqual(
      b.map((i) => [i.key, i.templates]),
      [
        [OCI, ['app']],
        [DEB, ['base']],
      ],
    );
  });

  it('an empty or missing cache lists nothing', async () => {
    const cat = new ImageCatalog({ svc: f.svc, cacheDir: join(f.dir, 'nowhere') });
    assert.deepEqual(await cat.list(undefined), []);
  });
});
