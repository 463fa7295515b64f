/**
 * SandboxNetworks without VMs: refused to a non-root uid; as root (the host's own namespaces
 * and nftables, under a temp state dir's instance tag, so nobody else's objects), the life of
 * its slots: the pool, acquire, apply, reconcile of strays, release, close and purgeNetworks.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ALWAYS_DENIED } from '../core/cidr.ts';
import { KilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import type { EgressRules } from '../core/network-policy.ts';
import { hostTable, instanceTag } from './names.ts';
import { SandboxNetworks, purgeNetworks } from './sandbox-networks.ts';
import { hostSlots } from './testing/host-slots.ts';

const opts = (stateDir: string, uid = 0) => ({
  stateDir,
  pool: '10.231.0.0/16',
  alwaysDenied: ALWAYS_DENIED.map((r) => r.cidr),
  uid,
  log: nullLogger,
  ready: 1,
  // Refills only when a test asks (filled()), except where a test sets its own.
  refillAfterMs: 60_000,
});

it('open refuses a non-root uid with permission_denied naming KILN_NETWORK=unisolated, touching nothing', async () => {
  await assert.rejects(
    // The pool is checked after the uid: a non-root kilnd fails on the uid whatever its pool.
    SandboxNetworks.open({ ...opts('/nonexistent/kiln-state', 1000), pool: 'not a pool' }),
    (e: unknown) =>
      e instanceof KilnError &&
      e.code === 'permission_denied' &&
      /needs root/.test(e.message) &&
      e.message.includes('KILN_NETWORK=unisolated'),
  );
});

describe('SandboxNetworks as root (no VM)', () => {
  let state = '';
  let tag = '';
  before(async () => {
    state = await mkdtemp(join(tmpdir(), 'kiln-nets-'));
    tag = instanceTag(state);
  });
  after(async () => {
    await purgeNetworks(state);
    await rm(state, { recursive: true, force: true });
  });

  /** This instance's slots with a namespace and with a host link. */
  const slots = (): { ns: number[]; links: number[] } => {
    const h = hostSlots(tag);
    return { ns: h.namespaces, links: h.links };
  };
  const hasTable = (): boolean =>
    execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).includes(`inet ${hostTable(tag)}\n`);
  const nsRules = (n: number): string =>
    execFileSync('nsenter', [`--net=/run/netns/kiln-${tag}-${n}`, 'nft', 'list', 'table', 'inet', 'kiln'], {
      encoding: 'utf8',
    });
  const RULES: EgressRules = { allowOut: ['192.0.2.0/24'], denyOut: [], internet: true };

  it('pool, acquire, apply, reconcile, release, close; purgeNetworks removes the rest', async () => {
    // What forwarding is once no kilnd runs: off if kiln turned it on (marker) or it was off.
    const forwardBefore =
      existsSync('/run/kiln-ip-forward-enabled') ||
      readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() === '0'
        ? '0'
        : '1';
    const nets = await SandboxNetworks.open(opts(state));
    assert.ok(hasTable(), 'the host table is installed');
    await nets.reconcile([]);
    await nets.filled();
    assert.deepEqual(slots(), { ns: [0], links: [0] }, 'one slot made ahead');
    assert.equal(nets.readyCount, 1);

    const a = await nets.acquire(RULES, 'sbx-a');
    assert.equal(a.namespace, `/run/netns/kiln-${tag}-0`, 'the ready slot');
    assert.deepEqual(nets.peer(a.address), { owner: 'sbx-a', rules: RULES });
    assert.match(nsRules(0), /set allow4 \{[^}]*192\.0\.2\.0\/24/);
    assert.deepEqual(slots(), { ns: [0], links: [0] }, 'no slot is made during the create that took one');
    await nets.filled();
    assert.deepEqual(slots(), { ns: [0, 1], links: [0, 1] }, 'the pool refilled');

    const next: EgressRules = { allowOut: [], denyOut: ['198.51.100.0/24'], internet: false };
    await nets.apply(a.namespace, next);
    assert.deepEqual(nets.peer(a.address)?.rules, next);
    assert.match(nsRules(0), /set deny4 \{[^}]*198\.51\.100\.0\/24/);
    await assert.rejects(nets.apply(`/run/netns/kiln-${tag}-9`, next), { code: 'not_found' });

    // A restart: a stray (a crash between making a slot and journalling it) goes with the ready
    // slot; the live one stays with its rules.
    execFileSync('ip', ['netns', 'add', `kiln-${tag}-200`]);
    const again = await SandboxNetworks.open(opts(state));
    assert.deepEqual(await again.reconcile([{ namespace: a.namespace, owner: 'sbx-a', rules: next }]), {
      removed: 2,
    });
    await again.filled();
    assert.deepEqual(slots(), { ns: [0, 1], links: [0, 1] });
    assert.deepEqual(again.peer(a.address), { owner: 'sbx-a', rules: next });

    await again.release(a.namespace);
    await again.release(a.namespace); // gone already: fine
    assert.equal(again.peer(a.address), undefined);
    assert.deepEqual(slots(), { ns: [1], links: [1] });
    await again.close();
    assert.deepEqual(slots(), { ns: [], links: [] }, 'close destroys the unclaimed slots');
    assert.ok(!hasTable(), 'and, with no slot in use, the host table');
    // The last kiln host table gone, forwarding kiln turned on is off again (another kilnd or
    // test run sharing the host keeps it on while its table exists).
    if (!/kiln_net_/.test(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }))) {
      assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), forwardBefore);
      assert.ok(!existsSync('/run/kiln-ip-forward-enabled'), 'the marker is gone');
    }

    // What a crashed kilnd leaves, purged: a slot and the table.
    const third = await SandboxNetworks.open(opts(state));
    await third.acquire(RULES, 'sbx-b');
    await third.filled(); // (a refill racing the purge would make a slot after it)
    await purgeNetworks(state);
    assert.deepEqual(slots(), { ns: [], links: [] });
    assert.ok(!hasTable());
  });

  it('refills by itself once no acquire came for refillAfterMs', async () => {
    const nets = await SandboxNetworks.open({ ...opts(state), refillAfterMs: 300 });
    await nets.reconcile([]);
    await nets.filled();
    const a = await nets.acquire(RULES, 'sbx-a');
    const b = await nets.acquire(RULES, 'sbx-b'); // none ready: made at once
    const ready = (): number => nets.readyCount;
    assert.equal(ready(), 0);
    const t0 = Date.now();
    while (ready() < 1 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    assert.equal(ready(), 1, 'refilled without being asked');
    assert.ok(Date.now() - t0 >= 250, `not before refillAfterMs (${Date.now() - t0} ms)`);
    await nets.release(a.namespace);
    await nets.release(b.namespace);
    await nets.close();
    assert.deepEqual(slots(), { ns: [], links: [] });
  });

  it("a slot made before reconcile (recovery's helper VM) never takes or destroys a live VM's", async () => {
    const first = await SandboxNetworks.open(opts(state));
    const live = await first.acquire(RULES, 'sbx-live'); // slot 0, as a VM that outlives kilnd
    await first.filled();
    // kilnd restarts: its replay starts a helper VM before reconcile has run.
    const restarted = await SandboxNetworks.open(opts(state));
    const helper = await restarted.acquire(RULES, 'cmp-helper');
    assert.notEqual(helper.namespace, live.namespace);
    assert.ok(slots().ns.includes(0) && slots().links.includes(0), "the live VM's slot is intact");
    await restarted.release(helper.namespace);
    await restarted.reconcile([{ namespace: live.namespace, owner: 'sbx-live', rules: RULES }]);
    await restarted.filled();
    assert.deepEqual(slots(), { ns: [0, 1], links: [0, 1] });
    await restarted.release(live.namespace);
    await restarted.close();
    assert.deepEqual(slots(), { ns: [], links: [] });
  });
});
