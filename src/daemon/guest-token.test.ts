/**
 * Issue 10, item 2, on the service's side (fake driver): a template's agent boots holding only
 * the hash of a bootstrap token that kilnd keeps with the template; each create's /init presents
 * it and sets the sandbox's own token; templates and archives without a token are refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../core/envd-auth.ts';
import type { VmSpec } from '../vmm/driver.ts';
import { ARCHIVE_FILES, MANIFEST, packArchive, type ArchiveManifest } from './snapshot-archive.ts';
import { FAKE_IMAGE as IMAGE, ServiceFixture, stageArchive } from './testing/fixtures.ts';

describe('bootstrap tokens of templates', () => {
  let fx: ServiceFixture;
  let specs: VmSpec[];
  beforeEach(async () => {
    fx = await ServiceFixture.start();
    specs = [];
    const start = fx.driver.start.bind(fx.driver);
    fx.driver.start = (spec, o) => {
      specs.push(spec);
      return start(spec, o);
    };
  });
  afterEach(() => fx.close());

  it("boots the template's agent with the token's hash only; each create presents the token and replaces it", async () => {
    const tpl = await fx.svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const snap = fx.store.getSnapshot(tpl.snapshotId ?? '');
    const token = snap.guestToken ?? '';
    assert.match(token, /^[0-9a-f]{64}$/, 'a 256-bit secret kept with the template');
    assert.deepEqual(specs[0]?.boot.kernelArgs, [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(token)}`]);
    assert.ok(!JSON.stringify(specs[0]).includes(token), 'the secret itself is not on the VM command line');
    const [a, b] = [await fx.svc.create({ template: 'base' }), await fx.svc.create({ template: 'base' })];
    assert.deepEqual(
      fx.guests.inits.map((i) => [i.presented, i.body.accessToken]),
      [
        [token, a.accessToken],
        [token, b.accessToken],
      ],
    );
    assert.notEqual(a.accessToken, b.accessToken);
    // A second build makes a new secret.
    await fx.svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const again = fx.store.getSnapshot(fx.store.getTemplate('base').snapshotId ?? '').guestToken;
    assert.ok(again && again !== token);
  });

  it('refuses to restore a template built before bootstrap tokens, saying how to rebuild it', async () => {
    await fx.svc.buildTemplate('old', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const tpl = fx.store.getTemplate('old');
    assert.equal(fx.svc.templateReady(tpl), true);
    const snap = fx.store.getSnapshot(tpl.snapshotId ?? '');
    // What an older kiln recorded: the same template, no token.
    fx.store.deleteSnapshot(snap.id);
    fx.store.insertSnapshot({ ...snap, guestToken: null });
    // Not ready: `kiln run` and the E2B API rebuild `base` when they find it so.
    assert.equal(fx.svc.templateReady(tpl), false);
    await assert.rejects(fx.svc.create({ template: 'old' }), {
      code: 'invalid_state',
      message: /template "old" was built by an older kiln .* rebuild it: kiln template build --name old/,
    });
    assert.deepEqual(fx.guests.inits, [], 'no VM was /init-ed');
    assert.deepEqual(fx.svc.list().items, [], 'no sandbox record left');
  });

  it('refuses an archive whose manifest carries no guest token', async () => {
    await fx.svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const src = join(fx.dir, 'archive');
    await mkdir(src);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(src, ARCHIVE_FILES.disk), '1M']);
    const staged = await stageArchive(
      src,
      { id: 'snap-imported', createdAt: new Date().toISOString() },
      (kind) => (kind === 'disk' ? undefined : kind),
    );
    const manifest = (guestToken: string | null): ArchiveManifest => ({
      ...staged,
      snapshot: { ...staged.snapshot, guestToken },
    });
    for (const bad of [null, '', 'short']) {
      await writeFile(join(src, MANIFEST), JSON.stringify(manifest(bad)));
      await assert.rejects(fx.svc.importSnapshot(packArchive(src)), {
        code: 'invalid_argument',
        message: /no usable guestToken/,
      });
    }
    await writeFile(join(src, MANIFEST), JSON.stringify(manifest('exported-token-0123456789')));
    const snap = await fx.svc.importSnapshot(packArchive(src));
    assert.equal(snap.guestToken, 'exported-token-0123456789');
  });
});
