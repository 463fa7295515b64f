/**
 * `kiln snapshot rm` against the real native API (in-process, on the state dir's socket) over the
 * sandbox service with the fake driver: a snapshot whose source still runs is deleted at once.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli } from '../../../test/helpers/cli.ts';
import { createRouter } from '../../api/http.ts';
import { nativeRoutes } from '../../api/native.ts';
import { nullLogger } from '../../core/log.ts';
import { ApiKeyService } from '../../daemon/api-keys.ts';
import type { GuestClient } from '../../daemon/guest-client.ts';
import { SandboxService } from '../../daemon/sandbox-service.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { FakeDriver } from '../../vmm/fake-driver.ts';

const IMAGE = { key: 'img-1', kernel: '/i/k', initrd: '/i/i', rootfs: '/i/r' };
const guest: GuestClient = {
  health: () => Promise.resolve(),
  init: () => Promise.resolve(),
  exec: () => Promise.resolve({ exitCode: 0, stdout: '', stderr: '', status: 'exit status 0' }),
  metrics: () => Promise.reject(new Error('unused')),
};

test('snapshot rm of a snapshot whose source runs: exit 0, then not found; the source runs on', async () => {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-rm-'));
  const state = join(home, 'state');
  mkdirSync(state, { mode: 0o700 });
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver();
  const svc = new SandboxService({
    store,
    driver,
    guest: () => guest,
    image: () => Promise.resolve(IMAGE),
    dataDir: home,
    log: nullLogger,
  });
  const routes = nativeRoutes({
    svc,
    version: 'test',
    buildTemplate: () => Promise.reject(new Error('unused')),
    keys: new ApiKeyService({ store }),
    e2bEnv: () => Promise.reject(new Error('unused')),
  });
  const server = createServer(createRouter(routes, nullLogger));
  await new Promise<void>((r) => server.listen(join(state, 'kilnd.sock'), r));
  const kiln = (...args: string[]) => runCli(home, args, state);
  try {
    await svc.buildTemplate('base', IMAGE, { memoryMiB: 512, vcpus: 1 });
    const src = await svc.create({ template: 'base' });
    const snap = await svc.snapshot(src.id, { name: 'cli-snap' });
    const rm = await kiln('snapshot', 'rm', 'cli-snap');
    assert.deepEqual([rm.status, rm.stderr], [0, '']);
    for (const args of [
      ['snapshot', 'get', 'cli-snap'],
      ['snapshot', 'restore', snap.id],
      ['snapshot', 'rm', snap.id],
    ]) {
      const r = await kiln(...args);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /not_found: snapshot "[^"]+" does not exist/, args.join(' '));
    }
    const listed = await kiln('snapshot', 'list', '--kind', 'snapshot', '--json');
    assert.deepEqual([listed.status, JSON.parse(listed.stdout)], [0, []]);
    assert.equal(svc.get(src.id).state, 'running');
  } finally {
    for (const id of await driver.list()) await driver.kill(id);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    store.close();
    rmSync(home, { recursive: true, force: true });
  }
});
