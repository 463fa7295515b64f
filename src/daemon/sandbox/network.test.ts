/**
 * A sandbox's network rules in the service (fake driver, fake network layer): create keeps them,
 * fork and restore get their own create's, pause/resume keeps them, updateNetwork applies then
 * stores (atomic), in the states where it is legal.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { KilnError } from '../../core/errors.ts';
import { OPEN_NETWORK, type EgressRules, type SandboxNetwork } from '../../core/network-policy.ts';
import { FakeEgress, NOW, ServiceFixture } from '../testing/fixtures.ts';

const RULES: SandboxNetwork = {
  egress: { allowOut: ['192.0.2.0/24', '*.example.com'], denyOut: ['0.0.0.0/0'], internet: true },
  allowPublicTraffic: false,
  maskRequestHost: 'localhost:${PORT}',
};
const NEW: EgressRules = { allowOut: ['198.51.100.7/32'], denyOut: [], internet: false };

const code = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: unknown) => (e instanceof KilnError ? e.code : String(e)),
  );

describe('SandboxService: network rules (fake driver, fake egress)', () => {
  let fx: ServiceFixture;
  let egress: FakeEgress;
  beforeEach(async () => {
    egress = new FakeEgress();
    fx = await ServiceFixture.start({ now: NOW, base: true, deps: { egress } });
  });
  afterEach(() => fx.close());

  it('create keeps its rules and mints a traffic token; allowInternet alone still works', async () => {
    const s = await fx.svc.create({ template: 'base', network: RULES });
    assert.deepEqual(fx.svc.get(s.id).network, RULES);
    assert.equal(s.trafficToken?.length, 48);
    assert.notEqual(s.trafficToken, s.accessToken);
    const closed = await fx.svc.create({ template: 'base', allowInternet: false });
    assert.deepEqual(closed.network, {
      ...OPEN_NETWORK,
      egress: { ...OPEN_NETWORK.egress, internet: false },
    });
    assert.deepEqual((await fx.svc.create({ template: 'base' })).network, OPEN_NETWORK);
    assert.equal(
      await code(fx.svc.create({ template: 'base', network: RULES, allowInternet: false })),
      'invalid_argument',
    );
  });

  it('a restore gets the rules its own create asked for; a fork clone gets its source rules', async () => {
    const src = await fx.svc.create({ template: 'base', network: RULES });
    const snap = await fx.svc.snapshot(src.id);
    assert.deepEqual((await fx.svc.restore(snap.id)).network, OPEN_NETWORK);
    const other = { ...OPEN_NETWORK, egress: NEW };
    assert.deepEqual((await fx.svc.restore(snap.id, { network: other })).network, other);
    const f = await fx.svc.fork(src.id, { count: 1 });
    const clone = f.results[0];
    assert.ok(clone && 'sandbox' in clone);
    assert.deepEqual(clone.sandbox.network, RULES);
  });

  it('updateNetwork on a running sandbox: applied first, then stored, with an event', async () => {
    const s = await fx.svc.create({ template: 'base', network: RULES });
    const rec = await fx.svc.updateNetwork(s.id, NEW, { opId: 'req-n' });
    assert.deepEqual(egress.applied, [{ sandboxId: s.id, egress: NEW }]);
    assert.deepEqual(rec.network, { ...RULES, egress: NEW }, 'allowPublicTraffic and the mask are kept');
    assert.deepEqual(fx.svc.get(s.id).network, rec.network);
    const ev = fx.store.listEvents(s.id).items.at(-1);
    assert.ok(ev);
    assert.equal(ev.message, 'network rules updated');
    assert.deepEqual(ev.data, { ...NEW, applied: true, opId: 'req-n' });
  });

  it('a failed apply stores nothing', async () => {
    const s = await fx.svc.create({ template: 'base', network: RULES });
    egress.fail = true;
    assert.equal(await code(fx.svc.updateNetwork(s.id, NEW)), 'internal');
    assert.deepEqual(fx.svc.get(s.id).network, RULES);
    assert.equal(fx.store.listEvents(s.id).items.at(-1)?.message, 'sandbox created');
  });

  it('paused: stored without applying, kept through resume; dead or unknown: refused', async () => {
    const s = await fx.svc.create({ template: 'base', network: RULES });
    await fx.svc.pause(s.id);
    await fx.svc.updateNetwork(s.id, NEW);
    assert.deepEqual(egress.applied, []);
    assert.deepEqual(fx.svc.get(s.id).network.egress, NEW);
    const resumed = await fx.svc.resume(s.id);
    assert.deepEqual(resumed.network, { ...RULES, egress: NEW });
    await fx.svc.kill(s.id);
    assert.equal(await code(fx.svc.updateNetwork(s.id, OPEN_NETWORK.egress)), 'invalid_state');
    assert.deepEqual(fx.svc.get(s.id).network.egress, NEW);
    assert.equal(await code(fx.svc.updateNetwork('sbx-none', NEW)), 'not_found');
  });

  it('without a network layer the rules are stored only', async () => {
    const plain = fx.restarted({ egress: undefined });
    const s = await plain.create({ template: 'base' });
    assert.deepEqual((await plain.updateNetwork(s.id, NEW)).network.egress, NEW);
    assert.deepEqual(fx.store.listEvents(s.id).items.at(-1)?.data, { ...NEW, applied: false, opId: null });
  });
});
