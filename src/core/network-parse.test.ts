import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from './errors.ts';
import { MAX_EGRESS_ENTRIES, parseNetwork, parseNetworkUpdate } from './network-parse.ts';
import { OPEN_NETWORK } from './network-policy.ts';

const E2B = { field: 'network', nulls: 'absent' } as const;
const refused = (fn: () => unknown, message: string): void => {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof KilnError);
    assert.equal(e.code, 'invalid_argument');
    assert.equal(e.message, message);
    return true;
  });
};

describe('parseNetwork (create)', () => {
  it('no network is OPEN_NETWORK; allow_internet_access false turns internet off', () => {
    assert.deepEqual(parseNetwork(undefined, undefined, E2B), OPEN_NETWORK);
    assert.deepEqual(parseNetwork(null, false, E2B), {
      ...OPEN_NETWORK,
      egress: { allowOut: [], denyOut: [], internet: false },
    });
  });

  it('normalises CIDRs, bare IPs and domains, and keeps allowPublicTraffic and maskRequestHost', () => {
    const n = parseNetwork(
      {
        allowOut: ['8.8.8.8', '10.1.2.3/8', 'API.Example.com.', '*.example.org', '2001:db8::1', '8.8.8.8/32'],
        denyOut: ['0.0.0.0/0', 'fe80::1/10'],
        allowPublicTraffic: false,
        maskRequestHost: 'localhost:${PORT}',
        egressProxy: null,
        rules: {},
        httpsPorts: [],
      },
      true,
      E2B,
    );
    assert.deepEqual(n, {
      egress: {
        allowOut: ['8.8.8.8/32', '10.0.0.0/8', 'api.example.com', '*.example.org', '2001:db8::1/128'],
        denyOut: ['0.0.0.0/0', 'fe80::/10'],
        internet: true,
      },
      allowPublicTraffic: false,
      maskRequestHost: 'localhost:${PORT}',
    });
  });

  it('names the field and the entry of every bad input', () => {
    refused(
      () => parseNetwork({ allowOut: ['1.1.1.1', 'a.com', '10.0.0.0/33'] }, true, E2B),
      'network.allowOut[2]: "10.0.0.0/33" is not a CIDR, IP address or domain name (e.g. "10.0.0.0/8", "8.8.8.8", "example.com", "*.example.com")',
    );
    refused(
      () => parseNetwork({ denyOut: ['example.com'] }, true, E2B),
      'network.denyOut[0]: "example.com": domain names are not supported for deny rules (use a CIDR or IP address)',
    );
    refused(
      () => parseNetwork({ denyOut: ['*'] }, true, E2B),
      'network.denyOut[0]: "*" is not a CIDR or IP address (e.g. "10.0.0.0/8", "8.8.8.8")',
    );
    refused(() => parseNetwork({ allowOut: [3] }, true, E2B), 'network.allowOut[0]: must be a string, got 3');
    refused(
      () => parseNetwork({ allowOut: 'a.com' }, true, E2B),
      'network.allowOut: must be an array of strings, got "a.com"',
    );
    refused(() => parseNetwork([], true, E2B), 'network: must be an object, got []');
    refused(
      () => parseNetwork({ allowOut: new Array<string>(MAX_EGRESS_ENTRIES + 1).fill('1.1.1.1') }, true, E2B),
      `network.allowOut: has ${MAX_EGRESS_ENTRIES + 1} entries; at most ${MAX_EGRESS_ENTRIES} are allowed`,
    );
    refused(
      () => parseNetwork({ allowOut: [`${'a'.repeat(300)}.com`] }, true, E2B),
      'network.allowOut[0]: is 304 characters long; at most 255 are allowed',
    );
    refused(
      () => parseNetwork({ allowPublicTraffic: 'no' }, true, E2B),
      'network.allowPublicTraffic: must be true or false, got "no"',
    );
    refused(
      () => parseNetwork({ maskRequestHost: 'a b' }, true, E2B),
      'network.maskRequestHost: "a b" is not a host name (at most 255 characters, e.g. "localhost:${PORT}")',
    );
  });

  it('refuses what kiln does not implement, and unknown fields, by name', () => {
    refused(
      () => parseNetwork({ egressProxy: { address: 'p:1080' } }, true, E2B),
      'network.egressProxy: tunnelling egress through a proxy is not supported by kiln',
    );
    refused(
      () => parseNetwork({ rules: { 'a.com': [{ transform: { headers: { a: 'b' } } }] } }, true, E2B),
      'network.rules: per-domain request transforms are not supported by kiln',
    );
    refused(
      () => parseNetwork({ httpsPorts: [3000] }, true, E2B),
      'network.httpsPorts: published HTTPS ports are not supported by kiln (ports serve plain HTTP)',
    );
    refused(
      () => parseNetwork({ allowout: [] }, true, E2B),
      'network.allowout: is not a network field (known: allowOut, denyOut, allowPublicTraffic, maskRequestHost)',
    );
  });

  it('null is absent for E2B and refused for the native API', () => {
    assert.deepEqual(parseNetwork({ allowOut: null, maskRequestHost: null }, true, E2B), OPEN_NETWORK);
    refused(
      () => parseNetwork({ allowOut: null }, true, { field: 'network', nulls: 'refused' }),
      'network.allowOut: must not be null',
    );
  });
});

describe('parseNetworkUpdate (PUT .../network)', () => {
  it('replaces the rules: omitted lists are cleared and internet defaults to on', () => {
    assert.deepEqual(
      parseNetworkUpdate({}, 'allow_internet_access', { nulls: 'absent' }),
      OPEN_NETWORK.egress,
    );
    assert.deepEqual(
      parseNetworkUpdate({ allowOut: ['1.2.3.4'], allow_internet_access: false }, 'allow_internet_access', {
        nulls: 'absent',
      }),
      { allowOut: ['1.2.3.4/32'], denyOut: [], internet: false },
    );
  });

  it('names the bad field (no network. prefix: the body is the config)', () => {
    refused(
      () =>
        parseNetworkUpdate({ denyOut: ['10.0.0.0/8', 'x.com'] }, 'allow_internet_access', {
          nulls: 'absent',
        }),
      'denyOut[1]: "x.com": domain names are not supported for deny rules (use a CIDR or IP address)',
    );
    refused(
      () => parseNetworkUpdate({ allowPublicTraffic: false }, 'allow_internet_access', { nulls: 'absent' }),
      'allowPublicTraffic: is not a network field (known: allowOut, denyOut, allow_internet_access)',
    );
    refused(
      () => parseNetworkUpdate({ allow_internet_access: 1 }, 'allow_internet_access', { nulls: 'absent' }),
      'allow_internet_access: must be true or false, got 1',
    );
  });
});
