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
import { fakeDeps, fakeService, nativeHandler } from '../../../test/helpers/fake-service.ts';
import { SqliteStore } from '../../store/sqlite-store.ts';
import { FakeDriver } from '../../vmm/fake-driver.ts';

test('snapshot rm of a snapshot whose source runs: exit 0, then not found; the source runs on', async () => {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-rm-'));
  const state = join(home, 'state');
  mkdirSync(state, { mode: 0o700 });
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver();
  const svc = await fakeService(fakeDeps({ store, driver, dataDir: home }));
  const server = createServer(nativeHandler(svc, store));
  await new Promise<void>((r) => server.listen(join(state, 'kilnd.sock'), r));
  const kiln = (...args: string[]) => runCli(home, args, state);
  try {
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
