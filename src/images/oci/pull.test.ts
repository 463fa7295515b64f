import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';
import { authorize, parseChallenges } from './auth.ts';
import { blobPath } from './client.ts';
import { MEDIA, parseManifest } from './manifest.ts';
import { resolveOciImage, unpackOciImage } from './pull.ts';
import { isLoopbackHost, parseReference, registryScheme } from './reference.ts';
import { startStubRegistry, type StubAuth, type StubRegistry } from './testing/registry-stub.ts';
import { digestOf, makeTar } from './testing/tar-fixture.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-pull-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Puts a one-layer image (gzip) under `tag`, behind an index with an arm64 entry first. */
function publish(
  reg: StubRegistry,
  tag: string,
  content: string,
  o: { index: boolean },
): { layer: string; manifest: string } {
  const tar = makeTar([{ path: 'etc/hello', content }]);
  const layer = zlib.gzipSync(tar);
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/bin', 'A=1'], WorkingDir: '/srv', User: 'app', Cmd: ['serve'] },
    rootfs: { type: 'layers', diff_ids: [digestOf(tar)] },
  });
  reg.blobs.set(digestOf(layer), layer);
  reg.blobs.set(digestOf(config), Buffer.from(config));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA.ociManifest,
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: digestOf(config),
      size: config.length,
    },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: digestOf(layer),
        size: layer.length,
      },
    ],
  });
  reg.manifests.set(digestOf(manifest), [MEDIA.ociManifest, manifest]);
  if (!o.index) {
    reg.manifests.set(tag, [MEDIA.ociManifest, manifest]);
    return { layer: digestOf(layer), manifest: digestOf(manifest) };
  }
  const other = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociManifest, config: {}, layers: [] });
  reg.manifests.set(digestOf(other), [MEDIA.ociManifest, other]);
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA.ociIndex,
    manifests: [
      {
        mediaType: MEDIA.ociManifest,
        digest: digestOf(other),
        size: other.length,
        platform: { os: 'linux', architecture: 'arm64' },
      },
      {
        mediaType: MEDIA.ociManifest,
        digest: digestOf(manifest),
        size: manifest.length,
        platform: { os: 'linux', architecture: 'amd64' },
      },
    ],
  });
  reg.manifests.set(tag, [MEDIA.ociIndex, index]);
  return { layer: digestOf(layer), manifest: digestOf(manifest) };
}

async function withRegistry(
  auth: StubAuth | undefined,
  fn: (reg: StubRegistry) => Promise<void>,
): Promise<void> {
  const reg = await startStubRegistry('team/app', auth);
  try {
    await fn(reg);
  } finally {
    await reg.close();
  }
}

describe('pull from a registry (in-process stub)', () => {
  it('resolves an index to linux/amd64, returns the config defaults and unpacks the layer', () =>
    withRegistry(undefined, async (reg) => {
      const { manifest } = publish(reg, 'v1', 'hi', { index: true });
      const cacheDir = join(dir, 'c1');
      const img = await resolveOciImage(`${reg.registry}/team/app:v1`, { cacheDir });
      assert.equal(img.digest, manifest);
      assert.deepEqual(
        { env: img.config.env, workdir: img.config.workdir, user: img.config.user, cmd: img.config.cmd },
        { env: ['PATH=/usr/bin', 'A=1'], workdir: '/srv', user: 'app', cmd: ['serve'] },
      );
      await unpackOciImage(img, join(dir, 'r1'), { cacheDir });
      assert.equal(readFileSync(join(dir, 'r1/etc/hello'), 'utf8'), 'hi');
      // By digest too, and the second time from the blob cache (no blob request).
      const before = reg.requests.filter((r) => r.includes('/blobs/')).length;
      const again = await resolveOciImage(`${reg.registry}/team/app@${manifest}`, { cacheDir });
      await unpackOciImage(again, join(dir, 'r1b'), { cacheDir });
      assert.equal(
        reg.requests.filter((r) => r.includes('/blobs/')).length,
        before + 1,
        'only the config again',
      );
    }));

  it('answers a bearer challenge anonymously, and with basic credentials at the token endpoint', async () => {
    await withRegistry({ bearer: true }, async (reg) => {
      publish(reg, 'v1', 'anon', { index: false });
      const img = await resolveOciImage(`${reg.registry}/team/app:v1`, { cacheDir: join(dir, 'c2') });
      await unpackOciImage(img, join(dir, 'r2'), { cacheDir: join(dir, 'c2') });
      assert.equal(readFileSync(join(dir, 'r2/etc/hello'), 'utf8'), 'anon');
      assert.ok(reg.requests.includes('GET /token'));
    });
    await withRegistry({ bearer: true, user: 'u', password: 'p' }, async (reg) => {
      publish(reg, 'v1', 'auth', { index: false });
      const ref = `${reg.registry}/team/app:v1`;
      await assert.rejects(
        resolveOciImage(ref, { cacheDir: join(dir, 'c3') }),
        /token endpoint .* answered 401/,
      );
      await assert.rejects(
        resolveOciImage(ref, {
          cacheDir: join(dir, 'c3'),
          credentials: { username: 'u', password: 'wrong' },
        }),
        /answered 401 \(wrong or missing credentials\)/,
      );
      const img = await resolveOciImage(ref, {
        cacheDir: join(dir, 'c3'),
        credentials: { username: 'u', password: 'p' },
      });
      assert.equal(img.config.workdir, '/srv');
    });
  });

  it('refuses a blob or manifest whose bytes do not match the digest, and caches nothing', () =>
    withRegistry(undefined, async (reg) => {
      const { layer, manifest } = publish(reg, 'v1', 'good', { index: false });
      const cacheDir = join(dir, 'c4');
      const img = await resolveOciImage(`${reg.registry}/team/app:v1`, { cacheDir });
      const good = reg.blobs.get(layer) as Buffer;
      const evil = Buffer.from(good);
      evil.writeUInt8(evil.readUInt8(evil.length - 5) ^ 0xff, evil.length - 5);
      reg.blobs.set(layer, evil);
      await assert.rejects(
        unpackOciImage(img, join(dir, 'r4'), { cacheDir }),
        /arrived with the digest sha256:[0-9a-f]+ \(tampered/,
      );
      assert.equal(existsSync(blobPath(cacheDir, layer)), false);
      reg.blobs.set(layer, Buffer.concat([good, Buffer.from('more')]));
      await assert.rejects(unpackOciImage(img, join(dir, 'r4'), { cacheDir }), /larger than its/);
      reg.manifests.set(manifest, [MEDIA.ociManifest, '{"tampered":true}']);
      await assert.rejects(
        resolveOciImage(`${reg.registry}/team/app@${manifest}`, { cacheDir }),
        /tampered or corrupt/,
      );
    }));

  it('names the platforms an index has when linux/amd64 is missing; 404 names the URL', () =>
    withRegistry(undefined, async (reg) => {
      const index = JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociIndex,
        manifests: [
          {
            mediaType: MEDIA.ociManifest,
            digest: digestOf('x'),
            size: 1,
            platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
          },
        ],
      });
      reg.manifests.set('arm', [MEDIA.ociIndex, index]);
      await assert.rejects(
        resolveOciImage(`${reg.registry}/team/app:arm`, { cacheDir: dir }),
        /no linux\/amd64 variant \(it has: linux\/arm64\/v8\)/,
      );
      await assert.rejects(
        resolveOciImage(`${reg.registry}/team/app:nope`, { cacheDir: dir }),
        /manifests\/nope answered 404/,
      );
    }));
});

describe('references, transport and challenges', () => {
  it('parses references and refuses bad ones by name', () => {
    assert.deepEqual(parseReference('127.0.0.1:5000/team/app:v1'), {
      registry: '127.0.0.1:5000',
      host: '127.0.0.1',
      repository: 'team/app',
      tag: 'v1',
      digest: undefined,
    });
    assert.equal(parseReference('localhost:5000/app').tag, 'latest');
    const d = `sha256:${'a'.repeat(64)}`;
    assert.equal(parseReference(`reg.example.com/app@${d}`).digest, d);
    assert.throws(() => parseReference('debian:12'), /must name the registry/);
    assert.throws(() => parseReference('127.0.0.1:5000/App'), /not a repository name/);
    assert.throws(() => parseReference('127.0.0.1:5000/app@sha256:abc'), /digest must be/);
  });

  it('plain HTTP only for loopback or listed registries', () => {
    assert.equal(registryScheme('127.0.0.1:5000', '127.0.0.1'), 'http');
    assert.equal(registryScheme('[::1]:5000', '::1'), 'http');
    assert.equal(registryScheme('localhost:5000', 'localhost'), 'http');
    assert.equal(registryScheme('10.0.0.5:5000', '10.0.0.5'), 'https');
    assert.equal(registryScheme('reg.example.com', 'reg.example.com'), 'https');
    assert.equal(registryScheme('reg.lan:5000', 'reg.lan', ['reg.lan:5000']), 'http');
    assert.equal(isLoopbackHost('127.8.9.10'), true);
    assert.equal(isLoopbackHost('128.0.0.1'), false);
  });

  it('parses WWW-Authenticate challenges', () => {
    assert.deepEqual(
      parseChallenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"',
      ),
      [
        {
          scheme: 'bearer',
          params: {
            realm: 'https://auth.example.com/token',
            service: 'registry.example.com',
            scope: 'repository:a/b:pull,push',
          },
        },
      ],
    );
    assert.deepEqual(parseChallenges('Basic realm="x \\"y\\"", Bearer realm=https://t,error=invalid_token'), [
      { scheme: 'basic', params: { realm: 'x "y"' } },
      { scheme: 'bearer', params: { realm: 'https://t', error: 'invalid_token' } },
    ]);
    assert.deepEqual(parseChallenges(''), []);
  });

  it('keeps credentials off clear-text token realms and answers Basic only with credentials', async () => {
    const o = { registryOrigin: 'https://reg.example.com', scope: 'repository:a:pull' };
    await assert.rejects(
      authorize(parseChallenges('Bearer realm="http://auth.example.com/token"'), o),
      /refusing the token realm http:\/\/auth.example.com: it is not HTTPS/,
    );
    await assert.rejects(
      authorize(parseChallenges('Basic realm="r"'), o),
      /wants credentials \(basic auth\)/,
    );
    assert.equal(
      await authorize(parseChallenges('Basic realm="r"'), {
        ...o,
        credentials: { username: 'u', password: 'p' },
      }),
      `Basic ${Buffer.from('u:p').toString('base64')}`,
    );
    await assert.rejects(
      authorize(parseChallenges('Negotiate'), o),
      /unsupported authentication \(negotiate\)/,
    );
  });

  it('refuses Docker schema 1 and foreign layers by name', () => {
    assert.throws(
      () => parseManifest('{"schemaVersion":1}', 'application/vnd.docker.distribution.manifest.v1+prettyjws'),
      /schema 1 manifests are not supported/,
    );
    const foreign = JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.dockerManifest,
      config: { mediaType: 'x', digest: digestOf('c'), size: 1 },
      layers: [
        {
          mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
          digest: digestOf('l'),
          size: 1,
        },
      ],
    });
    assert.throws(
      () => parseManifest(foreign, undefined),
      /layer 0 has the unsupported media type "application\/vnd.docker.image.rootfs.foreign/,
    );
  });
});
