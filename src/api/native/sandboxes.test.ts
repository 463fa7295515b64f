/**
 * The native create builds the default template on first use (as the E2B create does; the CLI
 * relies on it): one build for concurrent first creates, none for bad input or other templates.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nullLogger } from '../../core/log.ts';
import { ApiKeyService } from '../../daemon/api-keys.ts';
import { SandboxService } from '../../daemon/sandbox-service.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { FakeDriver } from '../../vmm/fake-driver.ts';
import { createRouter } from '../http.ts';
import { nativeRoutes } from '../native.ts';

const IMAGE = { key: 'img-1', kernel: '/i/k', initrd: '/i/i', rootfs: '/i/r' };

describe('native create: the default template on first use', () => {
  let dir: string;
  let store: SqliteStore;
  let server: Server;
  let url: string;
  const driver = new FakeDriver();
  const builds: { name: string; memoryMiB: number; vcpus: number }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-native-create-'));
    store = new SqliteStore(':memory:');
    const svc = new SandboxService({
      store,
      driver,
      guest: () => ({
        health: () => Promise.resolve(),
        init: () => Promise.resolve(),
        exec: () => Promise.reject(new Error('unused')),
        metrics: () => Promise.reject(new Error('unused')),
      }),
      image: () => Promise.resolve(IMAGE),
      dataDir: dir,
      log: nullLogger,
    });
    const routes = nativeRoutes({
      svc,
      version: '',
      buildTemplate: (name, r) => {
        builds.push({ name, ...r });
        return svc.buildTemplate(name, IMAGE, r);
      },
      keys: new ApiKeyService({ store }),
      e2bEnv: () => Promise.reject(new Error('unused')),
    });
    server = createServer(createRouter(routes, nullLogger));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const id of await driver.list()) await driver.kill(id);
    server.closeAllConnections();
    server.close();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const create = async (body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const r = await fetch(`${url}/v1/sandboxes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, json: (await r.json()) as Record<string, unknown> };
  };

  it('bad input and other templates build nothing; two first creates of base share one build', async () => {
    assert.equal((await create({ template: 'base', timeoutS: 'x' })).status, 400);
    assert.equal((await create({ template: 'base', metadata: { a: 1 } })).status, 400);
    const other = await create({ template: 'nope' });
    assert.deepEqual([other.status, other.json['code']], [404, 'not_found']);
    assert.deepEqual(builds, [], 'nothing built yet');
    const [a, b] = await Promise.all([create({ template: 'base' }), create({ template: 'base' })]);
    assert.deepEqual(
      [a.status, b.status, a.json['state'], b.json['state']],
      [201, 201, 'running', 'running'],
    );
    assert.deepEqual(builds, [{ name: 'base', memoryMiB: 512, vcpus: 1 }]);
    assert.equal((await create({ template: 'base' })).status, 201);
    assert.equal(builds.length, 1, 'built once');
  });
});
