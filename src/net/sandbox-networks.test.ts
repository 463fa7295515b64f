import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ALWAYS_DENIED } from '../core/cidr.ts';
import { KilnError } from '../core/errors.ts';
import { nullLogger } from '../core/log.ts';
import { SandboxNetworks } from './sandbox-networks.ts';

it('open refuses a non-root uid with permission_denied naming KILN_NETWORK=unisolated, touching nothing', async () => {
  await assert.rejects(
    SandboxNetworks.open({
      stateDir: '/nonexistent/kiln-state',
      // Checked after the uid: a non-root kilnd fails on the uid whatever its pool.
      pool: 'not a pool',
      alwaysDenied: ALWAYS_DENIED.map((r) => r.cidr),
      uid: 1000,
      log: nullLogger,
    }),
    (e: unknown) =>
      e instanceof KilnError &&
      e.code === 'permission_denied' &&
      /needs root/.test(e.message) &&
      e.message.includes('KILN_NETWORK=unisolated'),
  );
});
