/**
 * Pulls from a real private registry: Debian's docker-registry on loopback with htpasswd basic
 * auth (bcrypt, apache2-utils' `htpasswd`), an image pushed by skopeo as its user. The right
 * credentials pull it; none, or a wrong password, fail naming the registry, and a failed pull
 * leaves nothing in the blob cache. E2B's gcp credentials parsed from an SDK body pull from a
 * registry whose user is `_json_key`. No VM.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pushTinyImage, startRegistry, type LocalRegistry } from '../../../test/helpers/oci-registry.ts';
import { parseBuildSpec } from '../../core/template-steps.ts';
import { resolveOciImage, unpackOciImage } from './pull.ts';

const USER = { username: 'robot', password: 'pw-5b0e-private' };
let dir: string;
let reg: LocalRegistry;
let ref: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-regauth-'));
  reg = await startRegistry(dir, { auth: USER });
  ref = `${reg.registry}/private/img:t`;
  await pushTinyImage(dir, reg.registry, 'private/img:t', { 'etc/private-marker': 'private bits\n' }, USER);
});
after(async () => {
  await reg.close();
  await rm(dir, { recursive: true, force: true });
});

describe('a private registry (htpasswd basic auth)', () => {
  it('the right credentials resolve and pull the image', async () => {
    const cacheDir = join(dir, 'cache-ok');
    const img = await resolveOciImage(ref, { cacheDir, credentials: USER });
    assert.match(img.digest, /^sha256:[0-9a-f]{64}$/);
    await unpackOciImage(img, join(dir, 'root'), { cacheDir });
    assert.equal(readFileSync(join(dir, 'root/etc/private-marker'), 'utf8'), 'private bits\n');
  });

  it('no credentials: refused naming the registry, nothing cached', async () => {
    const cacheDir = join(dir, 'cache-none');
    await assert.rejects(
      resolveOciImage(ref, { cacheDir }),
      (e: Error & { code?: string }) =>
        e.code === 'image_build_failed' &&
        e.message === `pull: the registry http://${reg.registry} wants credentials (basic auth)`,
    );
    assert.equal(existsSync(join(cacheDir, 'oci')), false);
  });

  it('a wrong password or user: refused naming the registry, the password not in the message', async () => {
    for (const credentials of [
      { username: USER.username, password: 'wrong-pw' },
      { username: 'nobody', password: USER.password },
    ]) {
      await assert.rejects(
        resolveOciImage(ref, { cacheDir: join(dir, 'cache-wrong'), credentials }),
        (e: Error & { code?: string }) =>
          e.code === 'image_build_failed' &&
          e.message.startsWith(`pull: http://${reg.registry}/v2/private/img/manifests/t answered 401`) &&
          e.message.includes('the registry refused the credentials') &&
          !e.message.includes(credentials.password),
      );
    }
    assert.deepEqual(await readdir(join(dir, 'cache-wrong')).catch(() => []), []);
  });
});

describe('E2B gcp credentials (basic auth as "_json_key", as E2B sends them)', () => {
  // A service account key short enough for bcrypt (72 bytes): the registry checks it as a password.
  const KEY = '{"type":"service_account","project_id":"p"}';
  let gdir = '';
  let greg: LocalRegistry | undefined;
  before(async () => {
    gdir = await mkdtemp(join(tmpdir(), 'kiln-regauth-gcp-'));
    greg = await startRegistry(gdir, { auth: { username: '_json_key', password: KEY } });
    await pushTinyImage(
      gdir,
      greg.registry,
      'gcp/img:t',
      { 'etc/gcp-marker': 'gcp\n' },
      {
        username: '_json_key',
        password: KEY,
      },
    );
  });
  after(async () => {
    await greg?.close();
    await rm(gdir, { recursive: true, force: true });
  });

  it("the SDK's fromGCPRegistry body pulls the image", async () => {
    const registry = greg?.registry ?? '';
    const spec = parseBuildSpec({
      fromImage: `${registry}/gcp/img:t`,
      fromImageRegistry: { type: 'gcp', serviceAccountJson: KEY },
    });
    const login = 'image' in spec.from ? spec.from.registry : undefined;
    assert.ok(login);
    const img = await resolveOciImage(`${registry}/gcp/img:t`, {
      cacheDir: join(gdir, 'cache'),
      credentials: login,
    });
    await unpackOciImage(img, join(gdir, 'root'), { cacheDir: join(gdir, 'cache') });
    assert.equal(readFileSync(join(gdir, 'root/etc/gcp-marker'), 'utf8'), 'gcp\n');
  });
});
