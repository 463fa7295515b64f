/**
 * A private image's cache is no way around its registry: kilnd's `fromImage` parent maker
 * (api/oci-templates.ts: the OCI image built for real in a child process, its `kiln-img-*`
 * template booted on the fake driver) against Debian's docker-registry with htpasswd basic auth.
 * Once the image is built and cached with the right credentials, a build of the same reference
 * without them, or with wrong ones, still fails at the registry, also while a build with the
 * right ones is in flight; the right ones get the cached template back. No VM (the real image
 * build needs the kernel .deb of `kiln_setup`'s cache).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ociTemplateMaker, type ImageTemplateMaker } from '../../src/api/oci-templates.ts';
import { loadConfig } from '../../src/core/config.ts';
import { RegistryLogin } from '../../src/core/registry-login.ts';
import { ServiceFixture } from '../../src/daemon/testing/fixtures.ts';
import { pushTinyImage, startRegistry, type LocalRegistry } from '../helpers/oci-registry.ts';

const USER = { username: 'robot', password: 'pw-91d3-private' };
const right = (): RegistryLogin => new RegistryLogin(USER.username, USER.password);
let dir: string;
let reg: LocalRegistry;
let ref: string;
let f: ServiceFixture;
let make: ImageTemplateMaker;
const logLines: string[] = [];

before(async () => {
  dir = await mkdtemp('/tmp/kiln-oci-private-');
  reg = await startRegistry(dir, { auth: USER });
  ref = `${reg.registry}/private/app:1`;
  await pushTinyImage(dir, reg.registry, 'private/app:1', { 'srv/secret.txt': 'private\n' }, USER);
  f = await ServiceFixture.start();
  const log = pino(
    { level: 'trace' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    }),
  );
  make = ociTemplateMaker(
    { cacheDir: join(dir, 'cache'), debCacheDir: join(loadConfig().cacheDir, 'debs') },
    f.svc,
    log,
  );
});
after(async () => {
  await f.close();
  await reg.close();
  await rm(dir, { recursive: true, force: true });
});

const imageTemplates = (): string[] =>
  f.svc
    .templates()
    .map((t) => t.name)
    .filter((n) => n.startsWith('kiln-img-'));

describe('the image cache of a private registry', { timeout: 600_000 }, () => {
  let name: string;
  it('the right credentials build the image and its hidden template', async () => {
    name = await make(ref, 'op-right', right());
    assert.match(name, /^kiln-img-[0-9a-f]{32}$/);
    assert.deepEqual(imageTemplates(), [name]);
  });

  it('no credentials or wrong ones fail at the registry although the image is cached', async () => {
    await assert.rejects(
      make(ref, 'op-none'),
      new RegExp(`pull: the registry http://${reg.registry} wants credentials \\(basic auth\\)`),
    );
    await assert.rejects(
      make(ref, 'op-wrong', new RegistryLogin(USER.username, 'wrong-pw')),
      /answered 401 \(unauthorized: the registry refused the credentials\)/,
    );
    assert.deepEqual(imageTemplates(), [name]);
  });

  it('a build without credentials does not join one with them in flight', async () => {
    const [ok, none] = await Promise.allSettled([make(ref, 'op-a', right()), make(ref, 'op-b')]);
    assert.deepEqual(ok, { status: 'fulfilled', value: name });
    assert.equal(none.status, 'rejected');
    assert.match(String(none.reason), /wants credentials/);
  });

  it('the password reached no log line', () => {
    assert.ok(logLines.length > 0);
    assert.ok(!logLines.join('').includes(USER.password), logLines.join(''));
  });
});
