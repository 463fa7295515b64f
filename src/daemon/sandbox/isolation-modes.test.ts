/**
 * The daemon without working sandbox networks (fake driver): KILN_NETWORK=unisolated refuses
 * allow/deny lists it cannot enforce and warns on every create; `unavailableNetworks` (isolation
 * wanted, host cannot give it) fails every VM start with its error and leaves nothing running.
 * With a network provider, a slot is held exactly while its VM runs (pause releases it).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { KilnError } from '../../core/errors.ts';
import { OPEN_NETWORK, type SandboxNetwork } from '../../core/network-policy.ts';
import { unavailableNetworks, type NetworkProvider } from '../networks.ts';
import { NOW, ServiceFixture } from '../testing/fixtures.ts';

const WARNING =
  'sandbox is not isolated (KILN_NETWORK=unisolated): it reaches this host and its loopback services';
const withRules = (allowOut: string[], denyOut: string[]): SandboxNetwork => ({
  ...OPEN_NETWORK,
  egress: { allowOut, denyOut, internet: true },
});

describe('KILN_NETWORK=unisolated', () => {
  let fx: ServiceFixture;
  beforeEach(async () => {
    fx = await ServiceFixture.start({ now: NOW, base: true, deps: { unisolated: true } });
  });
  afterEach(() => fx.close());

  it('a create with allowOut or denyOut is invalid_argument naming the field; nothing is made', async () => {
    for (const [net, field] of [
      [withRules(['192.0.2.0/24'], []), 'network.allowOut'],
      [withRules(['example.com'], ['198.51.100.0/24']), 'network.allowOut'],
      [withRules([], ['198.51.100.0/24']), 'network.denyOut'],
    ] as const) {
      await assert.rejects(
        fx.svc.create({ template: 'base', network: net }),
        (e: unknown) =>
          e instanceof KilnError &&
          e.code === 'invalid_argument' &&
          e.message.includes(field) &&
          e.message.includes('KILN_NETWORK=unisolated'),
        JSON.stringify(net.egress),
      );
    }
    assert.deepEqual(fx.svc.list().items, [], 'no sandbox recorded');
    assert.deepEqual(await fx.driver.list(), []);
  });

  it('a create with volumeMounts is invalid_argument naming the field; nothing is made', async () => {
    await assert.rejects(
      fx.svc.create({ template: 'base', volumeMounts: [{ name: 'data', path: '/mnt/data' }] }),
      (e: unknown) =>
        e instanceof KilnError &&
        e.code === 'invalid_argument' &&
        e.message.startsWith('volumeMounts:') &&
        e.message.includes('KILN_NETWORK=unisolated'),
    );
    assert.deepEqual(fx.svc.list().items, [], 'no sandbox recorded');
  });

  it('a plain create (internet on or off) runs and records the not-isolated warning', async () => {
    for (const allowInternet of [true, false]) {
      const s = await fx.svc.create({ template: 'base', allowInternet });
      assert.equal(s.state, 'running');
      const ev = fx.store.listEvents(s.id).items.map((e) => [e.level, e.message]);
      assert.deepEqual(ev.at(-1), ['warn', WARNING]);
      assert.equal(ev.filter(([, m]) => m === WARNING).length, 1, 'once per create');
    }
  });

  it('updateNetwork with lists is refused too; rules stay as they were', async () => {
    const s = await fx.svc.create({ template: 'base' });
    await assert.rejects(
      fx.svc.updateNetwork(s.id, { allowOut: [], denyOut: ['198.51.100.0/24'], internet: true }),
      (e: unknown) => e instanceof KilnError && e.code === 'invalid_argument' && /denyOut/.test(e.message),
    );
    assert.deepEqual(fx.svc.get(s.id).network, OPEN_NETWORK);
  });

  it('an isolated kilnd does not warn', async () => {
    const isolated = fx.restarted({ unisolated: false });
    const s = await isolated.create({ template: 'base' });
    assert.ok(!fx.store.listEvents(s.id).items.some((e) => e.message === WARNING));
  });
});

describe('unavailableNetworks: isolation wanted, the host cannot give it', () => {
  let fx: ServiceFixture;
  beforeEach(async () => {
    fx = await ServiceFixture.start({ now: NOW, base: true });
  });
  afterEach(() => fx.close());

  it('a create fails with the given error; the sandbox is dead (failed to start), no VM, no open op', async () => {
    const why = new KilnError(
      'permission_denied',
      'sandbox network isolation needs root; KILN_NETWORK=unisolated',
    );
    const svc = fx.restarted({ networks: unavailableNetworks(why) });
    await assert.rejects(svc.create({ template: 'base' }), (e: unknown) => e === why);
    assert.deepEqual(
      svc.list().items.map((x) => [x.state, x.endReason]),
      [['dead', 'failed to start']],
    );
    assert.deepEqual(await fx.driver.list(), []);
    assert.deepEqual(fx.store.openOperations(), []);
  });
});

/** A network provider that hands out numbered slots and records who holds which. */
class FakeNetworks implements NetworkProvider {
  readonly held = new Map<string, string>();
  #next = 0;
  acquire(_rules: unknown, owner: string): Promise<{ namespace: string; address: string }> {
    const namespace = `/run/netns/fake-${this.#next++}`;
    this.held.set(namespace, owner);
    return Promise.resolve({ namespace, address: '10.231.0.2' });
  }
  apply(): Promise<void> {
    return Promise.resolve();
  }
  release(namespace: string): Promise<void> {
    this.held.delete(namespace);
    return Promise.resolve();
  }
  reconcile(): Promise<{ removed: number }> {
    return Promise.resolve({ removed: 0 });
  }
}

describe('network slots follow VMs (fake driver, fake provider)', () => {
  let fx: ServiceFixture;
  let nets: FakeNetworks;
  beforeEach(async () => {
    nets = new FakeNetworks();
    fx = await ServiceFixture.start({ now: NOW, base: true, deps: { networks: nets } });
  });
  afterEach(() => fx.close());

  it('held while the VM runs: the template build, pause and kill release theirs; resume takes a new one', async () => {
    const owners = () => [...nets.held.values()].sort();
    assert.deepEqual(owners(), [], 'the template build released its slot');
    const a = await fx.svc.create({ template: 'base' });
    const b = await fx.svc.create({ template: 'base' });
    assert.deepEqual(owners(), [a.id, b.id].sort());
    assert.equal((await fx.driver.status(a.id)).namespace, [...nets.held].find(([, o]) => o === a.id)?.[0]);
    await fx.svc.pause(a.id);
    assert.deepEqual(owners(), [b.id], 'a paused sandbox holds no slot');
    await fx.svc.resume(a.id);
    assert.deepEqual(owners(), [a.id, b.id].sort());
    assert.equal(nets.held.size, 2);
    await fx.svc.kill(b.id);
    await fx.svc.kill(a.id);
    assert.deepEqual(owners(), []);
  });
});
