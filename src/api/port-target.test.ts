import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guestHost, targetOf, trafficRefusal } from './port-target.ts';

describe('envd proxy targets', () => {
  it('a Host {port}-{id}.<domain> names a published port; 49983 there is the envd routes', () => {
    assert.deepEqual(targetOf({ host: '8000-sbx-ab12cd.localhost:7481' }), {
      kind: 'port',
      id: 'sbx-ab12cd',
      port: 8000,
    });
    assert.deepEqual(targetOf({ host: '3000-SBX-AB12.sandbox.example.com' }), {
      kind: 'port',
      id: 'sbx-ab12',
      port: 3000,
    });
    assert.deepEqual(targetOf({ host: '49983-sbx-ab12.localhost:7481' }), { kind: 'envd', id: 'sbx-ab12' });
    // The Host form wins over routing headers (as at E2B, where headers count on the shared host only).
    assert.deepEqual(
      targetOf({ host: '8000-sbx-a.localhost', 'e2b-sandbox-id': 'sbx-b', 'e2b-sandbox-port': '9000' }),
      { kind: 'port', id: 'sbx-a', port: 8000 },
    );
    assert.deepEqual(targetOf({ host: '0-sbx-a.localhost' }), {
      kind: 'bad',
      status: 400,
      message: 'the port in the Host must be a TCP port (1-65535), got "0"',
    });
    assert.deepEqual(targetOf({ host: '70000-sbx-a.localhost' }).kind, 'bad');
  });

  it('otherwise the E2b-Sandbox-Id and E2b-Sandbox-Port headers; no port or 49983 is envd as before', () => {
    const h = (port?: string): Record<string, string> => ({
      host: '127.0.0.1:7481',
      'e2b-sandbox-id': 'sbx-a',
      ...(port === undefined ? {} : { 'e2b-sandbox-port': port }),
    });
    assert.deepEqual(targetOf(h('8000')), { kind: 'port', id: 'sbx-a', port: 8000 });
    assert.deepEqual(targetOf(h('49983')), { kind: 'envd', id: 'sbx-a' });
    assert.deepEqual(targetOf(h()), { kind: 'envd', id: 'sbx-a' });
    assert.deepEqual(targetOf({ host: 'localhost:7481', 'e2b-sandbox-port': '8000' }), {
      kind: 'envd',
      id: undefined,
    });
    assert.deepEqual(targetOf({ host: 'kiln.example.com' }), { kind: 'envd', id: undefined });
    assert.deepEqual(targetOf(h('http')), {
      kind: 'bad',
      status: 400,
      message: 'E2b-Sandbox-Port must be a TCP port (1-65535), got "http"',
    });
    assert.equal(targetOf(h('65536')).kind, 'bad');
  });

  it("a sandbox without public traffic wants its token in e2b-traffic-access-token, with E2B's 403 bodies", () => {
    const secured = { allowPublicTraffic: false, token: 'tok-1' };
    assert.equal(trafficRefusal({ allowPublicTraffic: true, token: null }, {}, 'sbx-a'), undefined);
    assert.equal(trafficRefusal(secured, { 'e2b-traffic-access-token': 'tok-1' }, 'sbx-a'), undefined);
    assert.deepEqual(trafficRefusal(secured, {}, 'sbx-a'), {
      status: 403,
      body: {
        sandboxId: 'sbx-a',
        message:
          "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing",
        code: 403,
      },
    });
    const wrong = {
      status: 403,
      body: {
        sandboxId: 'sbx-a',
        message:
          "Sandbox is secured with traffic access token. Provided token in header 'e2b-traffic-access-token' is invalid",
        code: 403,
      },
    };
    assert.deepEqual(trafficRefusal(secured, { 'e2b-traffic-access-token': 'tok-2' }, 'sbx-a'), wrong);
    // No token was ever made: nothing opens it.
    assert.deepEqual(
      trafficRefusal(
        { allowPublicTraffic: false, token: null },
        { 'e2b-traffic-access-token': 'x' },
        'sbx-a',
      ),
      wrong,
    );
  });

  it('the guest sees the mask (with ${PORT}) or the client Host', () => {
    const p = { allowPublicTraffic: true, token: null };
    assert.equal(guestHost(p, 8000, '8000-sbx-a.localhost:7481'), '8000-sbx-a.localhost:7481');
    assert.equal(guestHost({ ...p, maskRequestHost: 'localhost:${PORT}' }, 8000, 'x'), 'localhost:8000');
  });
});
