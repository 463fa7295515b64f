/**
 * E2B's network rules through the API (fake driver, fake network layer): create's `network` and
 * `allow_internet_access` through the real `e2b` SDK, get's `network`, `PUT .../network` (the
 * SDK's updateNetwork), and bad input answered 400 naming the field with nothing changed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox, SandboxNotFoundError } from 'e2b';
import { FakeEgress } from '../../daemon/testing/fixtures.ts';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B API: network rules (fake driver, fake egress, real e2b SDK)', () => {
  let h: E2bHarness;
  const egress = new FakeEgress();
  before(async () => (h = await E2bHarness.start({ deps: { egress } })));
  after(() => h.close());

  it('create keeps allowOut/denyOut/allowPublicTraffic; get answers them; a private sandbox gets a traffic token', async () => {
    const sbx = await Sandbox.create('base', {
      ...h.opts(),
      allowInternetAccess: false,
      network: {
        allowOut: ['192.0.2.1', 'API.example.com', '*.example.org'],
        denyOut: ['10.0.0.0/8'],
        allowPublicTraffic: false,
        maskRequestHost: 'localhost:${PORT}',
      },
    });
    const rec = h.svc.get(sbx.sandboxId);
    assert.deepEqual(rec.network, {
      egress: {
        allowOut: ['192.0.2.1/32', 'api.example.com', '*.example.org'],
        denyOut: ['10.0.0.0/8'],
        internet: false,
      },
      allowPublicTraffic: false,
      maskRequestHost: 'localhost:${PORT}',
    });
    assert.ok(rec.trafficToken);
    assert.equal(sbx.trafficAccessToken, rec.trafficToken);
    const info = await sbx.getInfo();
    assert.equal(info.allowInternetAccess, false);
    assert.deepEqual(info.network, {
      allowOut: ['192.0.2.1/32', 'api.example.com', '*.example.org'],
      denyOut: ['10.0.0.0/8'],
      rules: undefined,
      egressProxy: undefined,
      allowPublicTraffic: false,
      maskRequestHost: 'localhost:${PORT}',
      httpsPorts: undefined,
    });
    const open = await Sandbox.create('base', h.opts());
    assert.equal(open.trafficAccessToken, undefined, 'public ports need no token');
    const raw = await h.raw('GET', `/sandboxes/${open.sandboxId}`);
    const body = raw.json as Record<string, unknown>;
    assert.equal(body['allowInternetAccess'], true);
    assert.deepEqual(body['network'], { allowOut: [], denyOut: [], allowPublicTraffic: true });
    await Promise.all([sbx.kill(), open.kill()]);
  });

  it('updateNetwork replaces the rules (what is omitted is cleared) and applies them first', async () => {
    const sbx = await Sandbox.create('base', {
      ...h.opts(),
      network: { allowOut: ['192.0.2.0/24'], denyOut: ['0.0.0.0/0'] },
    });
    egress.applied = [];
    await sbx.updateNetwork({ denyOut: ['198.51.100.0/24'], allowInternetAccess: false });
    const want = { allowOut: [], denyOut: ['198.51.100.0/24'], internet: false };
    assert.deepEqual(egress.applied, [{ sandboxId: sbx.sandboxId, egress: want }]);
    assert.deepEqual(h.svc.get(sbx.sandboxId).network.egress, want);
    const r = await h.raw('PUT', `/sandboxes/${sbx.sandboxId}/network`, {});
    assert.equal(r.status, 204);
    assert.deepEqual(h.svc.get(sbx.sandboxId).network.egress, { allowOut: [], denyOut: [], internet: true });
    await sbx.kill();
    await assert.rejects(Sandbox.updateNetwork(sbx.sandboxId, {}, h.opts()), SandboxNotFoundError);
    await assert.rejects(Sandbox.updateNetwork('sbx-nope', {}, h.opts()), SandboxNotFoundError);
  });

  it('a paused sandbox takes new rules for its resume', async () => {
    const sbx = await Sandbox.create('base', h.opts());
    await sbx.pause();
    egress.applied = [];
    assert.equal(
      (await h.raw('PUT', `/sandboxes/${sbx.sandboxId}/network`, { allowOut: ['192.0.2.9'] })).status,
      204,
    );
    assert.deepEqual(egress.applied, []);
    assert.deepEqual(h.svc.get(sbx.sandboxId).network.egress.allowOut, ['192.0.2.9/32']);
    await sbx.kill();
  });

  it('bad rules: 400 naming the field and the entry; nothing created or changed', async () => {
    const before = h.svc.list().items.length;
    for (const [network, message] of [
      [
        { allowOut: ['1.1.1.1', '10.0.0.0/33'] },
        'network.allowOut[1]: "10.0.0.0/33" is not a CIDR, IP address or domain name',
      ],
      [
        { denyOut: ['example.com'] },
        'network.denyOut[0]: "example.com": domain names are not supported for deny rules',
      ],
      [
        { egressProxy: { address: 'p:1080' } },
        'network.egressProxy: tunnelling egress through a proxy is not supported by kiln',
      ],
      [{ httpsPorts: [443] }, 'network.httpsPorts: published HTTPS ports are not supported by kiln'],
      [
        { rules: { 'a.com': [{}] } },
        'network.rules: per-domain request transforms are not supported by kiln',
      ],
    ] as const) {
      const r = await h.raw('POST', '/v2/sandboxes', { templateID: 'base', network });
      assert.equal(r.status, 400, JSON.stringify(network));
      assert.ok(
        (r.json as { message: string }).message.startsWith(message),
        (r.json as { message: string }).message,
      );
    }
    assert.equal(h.svc.list().items.length, before);

    const sbx = await Sandbox.create('base', { ...h.opts(), network: { allowOut: ['192.0.2.0/24'] } });
    egress.applied = [];
    for (const [body, message] of [
      [{ allowOut: ['ok.example', 'bad_name!'] }, 'allowOut[1]: "bad_name!" is not a CIDR'],
      [
        { denyOut: ['*.example.com'] },
        'denyOut[0]: "*.example.com": domain names are not supported for deny rules',
      ],
      [{ allow_internet_access: 'no' }, 'allow_internet_access: must be true or false'],
      [{ allowPublicTraffic: false }, 'allowPublicTraffic: is not a network field'],
    ] as const) {
      const r = await h.raw('PUT', `/sandboxes/${sbx.sandboxId}/network`, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.ok(
        (r.json as { message: string }).message.startsWith(message),
        (r.json as { message: string }).message,
      );
    }
    assert.deepEqual(egress.applied, []);
    assert.deepEqual(h.svc.get(sbx.sandboxId).network.egress.allowOut, ['192.0.2.0/24']);

    egress.fail = true;
    const r = await h.raw('PUT', `/sandboxes/${sbx.sandboxId}/network`, { allowOut: [] });
    egress.fail = false;
    assert.equal(r.status, 500);
    assert.deepEqual(
      h.svc.get(sbx.sandboxId).network.egress.allowOut,
      ['192.0.2.0/24'],
      'a failed apply stored nothing',
    );
    await sbx.kill();
  });
});
