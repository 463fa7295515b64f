/**
 * Issue 10, item 2, on the service's side (fake driver): a template's agent boots holding only
 * the hash of a bootstrap token that kilnd keeps with the template; each create's /init presents
 * it and sets the sandbox's own token; templates and archives without a token are refused.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../core/envd-auth.ts';
import type { ArtifactRecord } from '../core/domain.ts';
import { nullLogger } from '../core/log.ts';
import { SqliteStore } from '../store/sqlite-store.ts';
import type { VmSpec } from '../vmm/driver.ts';
import { FakeDriver } from '../vmm/fake-driver.ts';
import type { ExecResult, GuestClient, GuestMetrics, InitBody } from './guest-client.ts';
import { SandboxService } from './sandbox-service.ts';
import {
  ARCHIVE_FILES,
  ARCHIVE_FORMAT,
  MANIFEST,
  artifact,
  packArchive,
  type ArchiveManifest,
} from './snapshot-archive.ts';

const IMAGE = { key: 'img-1', kernel: '/img/vmlinuz', initrd: '/img/initrd.img', rootfs: '/img/rootfs.ext4' };

/** What each /init carried: the body and the token it presented. */
const inits: { body: InitBody; presented: string | undefined }[] = [];
class TokenGuest implements GuestClient {
  health(): Promise<void> {
    return Promise.resolve();
  }
  init(body: InitBody, currentToken?: string): Promise<void> {
    inits.push({ body, presented: currentToken });
    return Promise.resolve();
  }
  exec(): Promise<ExecResult> {
    return Promise.resolve({ exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' });
  }
  metrics(): Promise<GuestMetrics> {
    return Promise.reject(new Error('unused'));
  }
}

describe('bootstrap tokens of templates', () => {
  let dir: string;
  let store: SqliteStore;
  let specs: VmSpec[];
  let driver: FakeDriver;
  let svc: SandboxService;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-boot-'));
    store = new SqliteStore(join(dir, 'state.db'));
    specs = [];
    inits.length = 0;
    driver = new FakeDriver();
    const start = driver.start.bind(driver);
    driver.start = (spec, o) => {
      specs.push(spec);
      return start(spec, o);
    };
    svc = new SandboxService({
      store,
      driver,
      guest: () => new TokenGuest(),
      image: () => Promise.resolve(IMAGE),
      dataDir: dir,
      log: nullLogger,
    });
  });
  afterEach(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("boots the template's agent with the token's hash only; each create presents the token and replaces it", async () => {
    const tpl = await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const snap = store.getSnapshot(tpl.snapshotId ?? '');
    const token = snap.guestToken ?? '';
    assert.match(token, /^[0-9a-f]{64}$/, 'a 256-bit secret kept with the template');
    assert.deepEqual(specs[0]?.boot.kernelArgs, [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(token)}`]);
    assert.ok(!JSON.stringify(specs[0]).includes(token), 'the secret itself is not on the VM command line');
    const [a, b] = [await svc.create({ template: 'base' }), await svc.create({ template: 'base' })];
    assert.deepEqual(
      inits.map((i) => [i.presented, i.body.accessToken]),
      [
        [token, a.accessToken],
        [token, b.accessToken],
      ],
    );
    assert.notEqual(a.accessToken, b.accessToken);
    // A second build makes a new secret.
    await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const again = store.getSnapshot(store.getTemplate('base').snapshotId ?? '').guestToken;
    assert.ok(again && again !== token);
  });

  it('refuses to restore a template built before bootstrap tokens, saying how to rebuild it', async () => {
    await svc.buildTemplate('old', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const tpl = store.getTemplate('old');
    assert.equal(svc.templateReady(tpl), true);
    const snap = store.getSnapshot(tpl.snapshotId ?? '');
    // What an older kiln recorded: the same template, no token.
    store.deleteSnapshot(snap.id);
    store.insertSnapshot({ ...snap, guestToken: null });
    // Not ready: `kiln run` and the E2B API rebuild `base` when they find it so.
    assert.equal(svc.templateReady(tpl), false);
    await assert.rejects(svc.create({ template: 'old' }), {
      code: 'invalid_state',
      message: /template "old" was built by an older kiln .* rebuild it: kiln template build --name old/,
    });
    assert.deepEqual(inits, [], 'no VM was /init-ed');
    assert.deepEqual(svc.list().items, [], 'no sandbox record left');
  });

  it('refuses an archive whose manifest carries no guest token', async () => {
    await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const src = join(dir, 'archive');
    await mkdir(src);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(src, ARCHIVE_FILES.disk), '1M']);
    for (const [kind, name] of Object.entries(ARCHIVE_FILES))
      if (kind !== 'disk') await writeFile(join(src, name), kind);
    const files: ArtifactRecord[] = [];
    for (const [kind, name] of Object.entries(ARCHIVE_FILES))
      files.push(await artifact(src, kind as keyof typeof ARCHIVE_FILES, name));
    const manifest = (guestToken: string | null): ArchiveManifest => ({
      format: ARCHIVE_FORMAT,
      snapshot: {
        id: 'snap-imported',
        name: null,
        memoryMiB: 512,
        vcpus: 1,
        guestToken,
        templateName: 'base',
        imageKey: 'img-1',
        createdAt: new Date().toISOString(),
      },
      files,
    });
    for (const bad of [null, '', 'short']) {
      await writeFile(join(src, MANIFEST), JSON.stringify(manifest(bad)));
      await assert.rejects(svc.importSnapshot(packArchive(src)), {
        code: 'invalid_argument',
        message: /no usable guestToken/,
      });
    }
    await writeFile(join(src, MANIFEST), JSON.stringify(manifest('exported-token-0123456789')));
    const snap = await svc.importSnapshot(packArchive(src));
    assert.equal(snap.guestToken, 'exported-token-0123456789');
  });
});
