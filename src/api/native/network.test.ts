/**
 * The native API's network rules (fake driver, fake network layer): create's `network` and
 * `allowInternet`, the Sandbox view's `network`/`trafficAccessToken`, restore's own rules, and
 * PUT /v1/sandboxes/{id}/network; bad input is 400 naming the field, with nothing changed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FakeEgress } from '../../daemon/testing/fixtures.ts';
import { NativeHarness } from '../testing/harness.ts';

describe('native API: network rules', () => {
  let h: NativeHarness;
  const egress = new FakeEgress();
  before(async () => (h = await NativeHarness.start({ base: true, deps: { egress } })));
  after(() => h.close());

  it('create keeps the rules and answers them; a private sandbox shows its traffic token', async () => {
    const r = await h.call('POST', '/v1/sandboxes', {
      template: 'base',
      allowInternet: false,
      network: {
        allowOut: ['192.0.2.5', '*.Example.com'],
        denyOut: ['10.1.0.0/16'],
        allowPublicTraffic: false,
      },
    });
    assert.equal(r.status, 201);
    const id = String(r.json?.['sandboxId']);
    assert.deepEqual(r.json?.['network'], {
      allowOut: ['192.0.2.5/32', '*.example.com'],
      denyOut: ['10.1.0.0/16'],
      allowInternet: false,
      allowPublicTraffic: false,
      maskRequestHost: null,
    });
    assert.equal(r.json['trafficAccessToken'], h.svc.get(id).trafficToken);
    const plain = await h.call('POST', '/v1/sandboxes', { template: 'base' });
    assert.deepEqual(plain.json?.['network'], {
      allowOut: [],
      denyOut: [],
      allowInternet: true,
      allowPublicTraffic: true,
      maskRequestHost: null,
    });
    assert.equal(plain.json['trafficAccessToken'], null);
    const snap = await h.call('POST', `/v1/sandboxes/${id}/snapshots`, {});
    const restored = await h.call('POST', `/v1/snapshots/${String(snap.json?.['snapshotId'])}/restore`, {
      network: { denyOut: ['198.51.100.0/24'] },
    });
    assert.equal(restored.status, 201);
    assert.deepEqual(
      (restored.json?.['network'] as Record<string, unknown>)['denyOut'],
      ['198.51.100.0/24'],
      'a restore gets its own rules, not its source',
    );
  });

  it('PUT /v1/sandboxes/{id}/network replaces the rules and answers the sandbox', async () => {
    const s = await h.svc.create({ template: 'base' });
    egress.applied = [];
    const r = await h.call('PUT', `/v1/sandboxes/${s.id}/network`, {
      allowOut: ['example.org'],
      allowInternet: false,
    });
    assert.equal(r.status, 200);
    const want = { allowOut: ['example.org'], denyOut: [], internet: false };
    assert.deepEqual(egress.applied, [{ sandboxId: s.id, egress: want }]);
    assert.deepEqual((r.json?.['network'] as Record<string, unknown>)['allowOut'], ['example.org']);
    assert.deepEqual(h.svc.get(s.id).network.egress, want);
    await h.svc.kill(s.id);
    const dead = await h.call('PUT', `/v1/sandboxes/${s.id}/network`, {});
    assert.deepEqual([dead.status, dead.json?.['code']], [409, 'invalid_state']);
    const none = await h.call('PUT', '/v1/sandboxes/sbx-none/network', {});
    assert.deepEqual([none.status, none.json?.['code']], [404, 'not_found']);
  });

  it('bad input: 400 naming the field, nothing created or changed', async () => {
    const n = h.svc.list().items.length;
    for (const [body, message] of [
      [
        { template: 'base', network: { allowOut: ['300.1.1.1'] } },
        'network.allowOut[0]: "300.1.1.1" is not a CIDR',
      ],
      [{ template: 'base', network: { denyOut: null } }, 'network.denyOut: must not be null'],
      [
        { template: 'base', network: { httpsPorts: [8443] } },
        'network.httpsPorts: published HTTPS ports are not supported',
      ],
    ] as const) {
      const r = await h.call('POST', '/v1/sandboxes', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.ok(String(r.json?.['message']).startsWith(message), String(r.json?.['message']));
    }
    assert.equal(h.svc.list().items.length, n);
    const s = await h.svc.create({ template: 'base' });
    egress.applied = [];
    const r = await h.call('PUT', `/v1/sandboxes/${s.id}/network`, { denyOut: ['example.com'] });
    assert.equal(r.status, 400);
    assert.equal(
      r.json?.['message'],
      'denyOut[0]: "example.com": domain names are not supported for deny rules (use a CIDR or IP address)',
    );
    assert.deepEqual(egress.applied, []);
    assert.deepEqual(h.svc.get(s.id).network.egress.denyOut, []);
  });
});
