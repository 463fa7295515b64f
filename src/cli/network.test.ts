/**
 * `kiln sandbox create --allow-out/--deny-out/--no-internet` and `kiln sandbox network`, run as
 * the real CLI against the native API served on the state dir's socket (fake-driver service).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NativeHarness } from '../api/testing/harness.ts';
import { runCli, type CliRun } from '../../test/helpers/cli.ts';

describe('kiln sandbox create/network: egress rules', () => {
  let h: NativeHarness;
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-net-'));
  const state = join(home, 'state');
  const kiln = (...args: string[]): Promise<CliRun> => runCli(home, args, state);
  before(async () => {
    mkdirSync(state, { mode: 0o700 });
    h = await NativeHarness.start({ base: true, socket: join(state, 'kilnd.sock') });
  });
  after(async () => {
    await h.close();
    rmSync(home, { recursive: true, force: true });
  });

  it('create takes repeatable --allow-out/--deny-out and --no-internet', async () => {
    const r = await kiln(
      'sandbox', 'create', '--allow-out', '192.0.2.1', '--allow-out', '*.example.com',
      '--deny-out', '10.0.0.0/8', '--no-internet', '--json',
    ); // prettier-ignore
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { sandboxId: string; network: unknown };
    const want = { allowOut: ['192.0.2.1/32', '*.example.com'], denyOut: ['10.0.0.0/8'], internet: false };
    assert.deepEqual(h.svc.get(s.sandboxId).network.egress, want);
    assert.deepEqual(s.network, {
      allowOut: want.allowOut,
      denyOut: want.denyOut,
      allowInternet: false,
      allowPublicTraffic: true,
      maskRequestHost: null,
    });
  });

  it('network replaces the rules; bad input exits non-zero naming the entry and changes nothing', async () => {
    const s = await h.svc.create({ template: 'base', allowInternet: false });
    const r = await kiln('sandbox', 'network', s.id, '--allow-out', 'example.org', '--deny-out', '0.0.0.0/0');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /allowOut\s+example\.org\n/);
    assert.match(r.stdout, /internet\s+yes/);
    assert.deepEqual(h.svc.get(s.id).network.egress, {
      allowOut: ['example.org'],
      denyOut: ['0.0.0.0/0'],
      internet: true,
    });
    const bad = await kiln('sandbox', 'network', s.id, '--deny-out', 'example.com');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /denyOut\[0\]: "example\.com": domain names are not supported for deny rules/);
    assert.deepEqual(h.svc.get(s.id).network.egress.denyOut, ['0.0.0.0/0']);
    const cleared = await kiln('sandbox', 'network', s.id, '--no-internet', '--json');
    assert.equal(cleared.status, 0, cleared.stderr);
    assert.deepEqual((JSON.parse(cleared.stdout) as { network: unknown }).network, {
      allowOut: [],
      denyOut: [],
      allowInternet: false,
      allowPublicTraffic: true,
      maskRequestHost: null,
    });
    const help = await kiln('sandbox', 'network', '--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /kiln sandbox network ID \[--allow-out X\]\.\.\./);
  });
});
