import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from './config.ts';
import { isKilnError } from './errors.ts';

const HOME = '/home/u';

test('loadConfig: an empty environment gives the defaults', () => {
  assert.deepEqual(loadConfig({}, HOME), {
    stateDir: '/home/u/.local/state/kiln',
    cacheDir: '/home/u/.cache/kiln',
    debCacheDir: undefined,
    debianMirror: undefined,
    accel: 'auto',
    e2bApiPort: undefined,
    e2bSandboxPort: undefined,
    dashboardPort: undefined,
    sandboxDomain: undefined,
    overcommitRatio: undefined,
    diskReserveMiB: undefined,
    diskOvercommitRatio: undefined,
    readyTimeoutMs: undefined,
    templateReadyTimeoutMs: undefined,
    reapEveryMs: undefined,
    livenessEveryMs: undefined,
    flattenEveryMs: undefined,
    retentionS: undefined,
    templateGcAfterS: undefined,
    templateGcEveryS: undefined,
    agentGuard: true,
    ksm: false,
    network: 'isolated',
    netPool: undefined,
    dns: undefined,
    warmPool: undefined,
    failpoint: undefined,
  });
});

test('loadConfig: XDG dirs are used when KILN_STATE_DIR / KILN_CACHE_DIR are unset', () => {
  const c = loadConfig({ XDG_STATE_HOME: '/x/state', XDG_CACHE_HOME: '/x/cache' }, HOME);
  assert.equal(c.stateDir, '/x/state/kiln');
  assert.equal(c.cacheDir, '/x/cache/kiln');
});

test('loadConfig: an empty variable means the default', () => {
  const env = {
    KILN_STATE_DIR: '',
    KILN_ACCEL: '',
    KILN_E2B_API_PORT: '',
    KILN_AGENT_GUARD: '',
    KILN_FAILPOINT: '',
    KILN_OVERCOMMIT_RATIO: '',
  };
  assert.deepEqual(loadConfig(env, HOME), loadConfig({}, HOME));
});

test('loadConfig: every variable is parsed', () => {
  const c = loadConfig(
    {
      KILN_STATE_DIR: '/s',
      KILN_CACHE_DIR: '/c',
      KILN_DEB_CACHE_DIR: '/debs',
      KILN_DEBIAN_MIRROR: 'http://mirror.example/debian',
      KILN_ACCEL: 'tcg',
      KILN_E2B_API_PORT: '0',
      KILN_E2B_SANDBOX_PORT: '65535',
      KILN_DASHBOARD_PORT: '7999',
      KILN_SANDBOX_DOMAIN: 'sbx.example.com:8443',
      KILN_OVERCOMMIT_RATIO: '0.75',
      KILN_DISK_RESERVE_MIB: '0',
      KILN_DISK_OVERCOMMIT_RATIO: '2.5',
      KILN_READY_TIMEOUT_MS: '120000',
      KILN_TEMPLATE_READY_TIMEOUT_MS: '30000',
      KILN_REAP_EVERY_MS: '500',
      KILN_LIVENESS_EVERY_MS: '2000',
      KILN_FLATTEN_EVERY_MS: '60000',
      KILN_RETENTION_S: '86400',
      KILN_TEMPLATE_GC_AFTER_S: '0',
      KILN_TEMPLATE_GC_EVERY_S: '600',
      KILN_AGENT_GUARD: 'off',
      KILN_NETWORK: 'unisolated',
      KILN_NET_POOL: '10.99.0.0/16',
      KILN_DNS: '198.51.100.53',
      KILN_WARM_POOL: '3',
      KILN_KSM: 'on',
      KILN_FAILPOINT: 'create:vm started',
    },
    HOME,
  );
  assert.deepEqual(c, {
    stateDir: '/s',
    cacheDir: '/c',
    debCacheDir: '/debs',
    debianMirror: 'http://mirror.example/debian',
    accel: 'tcg',
    e2bApiPort: 0,
    e2bSandboxPort: 65535,
    dashboardPort: 7999,
    sandboxDomain: 'sbx.example.com:8443',
    overcommitRatio: 0.75,
    diskReserveMiB: 0,
    diskOvercommitRatio: 2.5,
    readyTimeoutMs: 120000,
    templateReadyTimeoutMs: 30000,
    reapEveryMs: 500,
    livenessEveryMs: 2000,
    flattenEveryMs: 60000,
    retentionS: 86400,
    templateGcAfterS: 0,
    templateGcEveryS: 600,
    agentGuard: false,
    ksm: true,
    network: 'unisolated',
    netPool: '10.99.0.0/16',
    dns: '198.51.100.53',
    warmPool: 3,
    failpoint: 'create:vm started',
  });
  assert.equal(loadConfig({ KILN_ACCEL: 'kvm' }, HOME).accel, 'kvm');
  assert.equal(loadConfig({ KILN_AGENT_GUARD: 'on' }, HOME).agentGuard, true);
});

test('loadConfig: a bad value is refused with invalid_argument naming the variable', () => {
  const bad: [string, string, RegExp][] = [
    ['KILN_ACCEL', 'hvf', /KILN_ACCEL: must be one of auto \| kvm \| tcg, got "hvf"/],
    ['KILN_AGENT_GUARD', 'no', /KILN_AGENT_GUARD: must be one of on \| off, got "no"/],
    ['KILN_KSM', 'yes', /KILN_KSM: must be one of on \| off, got "yes"/],
    ['KILN_NETWORK', 'open', /KILN_NETWORK: must be one of isolated | unisolated, got "open"/],
    ['KILN_DNS', 'dns.example', /KILN_DNS: must be an IPv4 address, got "dns.example"/],
    ['KILN_E2B_API_PORT', '65536', /KILN_E2B_API_PORT: must be a TCP port \(0-65535\), got "65536"/],
    ['KILN_E2B_API_PORT', '80.5', /KILN_E2B_API_PORT: must be a TCP port/],
    ['KILN_E2B_SANDBOX_PORT', 'http', /KILN_E2B_SANDBOX_PORT: must be a TCP port/],
    ['KILN_E2B_SANDBOX_PORT', '-1', /KILN_E2B_SANDBOX_PORT: must be a TCP port/],
    ['KILN_SANDBOX_DOMAIN', 'http://x.example', /KILN_SANDBOX_DOMAIN: must be a lowercase host name/],
    ['KILN_SANDBOX_DOMAIN', '.example.com', /KILN_SANDBOX_DOMAIN: must be a lowercase host name/],
    ['KILN_SANDBOX_DOMAIN', 'x.example:0', /KILN_SANDBOX_DOMAIN: must be a lowercase host name/],
    ['KILN_OVERCOMMIT_RATIO', '0', /KILN_OVERCOMMIT_RATIO: must be a number > 0, got "0"/],
    ['KILN_OVERCOMMIT_RATIO', 'lots', /KILN_OVERCOMMIT_RATIO: must be a number > 0/],
    ['KILN_DISK_RESERVE_MIB', '-5', /KILN_DISK_RESERVE_MIB: must be a number >= 0, got "-5"/],
    ['KILN_DISK_RESERVE_MIB', ' ', /KILN_DISK_RESERVE_MIB: must be a number >= 0/],
    ['KILN_DISK_OVERCOMMIT_RATIO', '0.5', /KILN_DISK_OVERCOMMIT_RATIO: must be a number >= 1, got "0.5"/],
    ['KILN_DISK_OVERCOMMIT_RATIO', 'Infinity', /KILN_DISK_OVERCOMMIT_RATIO: must be a number >= 1/],
    ['KILN_READY_TIMEOUT_MS', '999', /KILN_READY_TIMEOUT_MS: must be a whole number >= 1000, got "999"/],
    ['KILN_READY_TIMEOUT_MS', '1.5e4', /KILN_READY_TIMEOUT_MS: must be a whole number/],
    ['KILN_WARM_POOL', '65', /KILN_WARM_POOL: must be a whole number from 0 to 64, got "65"/],
    ['KILN_WARM_POOL', '-1', /KILN_WARM_POOL: must be a whole number >= 0/],
    ['KILN_REAP_EVERY_MS', '50', /KILN_REAP_EVERY_MS: must be a whole number >= 100, got "50"/],
    ['KILN_LIVENESS_EVERY_MS', 'often', /KILN_LIVENESS_EVERY_MS: must be a whole number >= 100/],
    ['KILN_FLATTEN_EVERY_MS', '10', /KILN_FLATTEN_EVERY_MS: must be a whole number >= 1000, got "10"/],
    ['KILN_TEMPLATE_GC_AFTER_S', '1d', /KILN_TEMPLATE_GC_AFTER_S: must be a whole number >= 0, got "1d"/],
    ['KILN_TEMPLATE_GC_EVERY_S', '-60', /KILN_TEMPLATE_GC_EVERY_S: must be a whole number >= 0/],
    ['KILN_RETENTION_S', '7d', /KILN_RETENTION_S: must be a whole number >= 0, got "7d"/],
  ];
  for (const [name, value, message] of bad) {
    assert.throws(
      () => loadConfig({ [name]: value }, HOME),
      (e: unknown) => {
        assert.ok(isKilnError(e), `${name}=${value}: a KilnError`);
        assert.equal(e.code, 'invalid_argument');
        assert.match(e.message, message);
        assert.equal(e.details?.['field'], name);
        return true;
      },
      `${name}=${value} is refused`,
    );
  }
});
