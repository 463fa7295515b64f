/**
 * The official `e2b` SDK, unmodified, against a real kilnd with real QEMU guests, for each release
 * of the version matrix: the pinned e2b@2.51.0 (creates with `POST /v2/sandboxes`), e2b@2.45.0
 * (`POST /sandboxes`, `POST /sandboxes/{id}/connect`) and e2b@2.7.0 (the oldest 2.x that honours
 * E2B_SANDBOX_URL; no snapshots, lifecycle or closeStdin), installed as the npm aliases `e2b-2.45`
 * and `e2b-2.7` (devDependencies). One kilnd and one base template serve them all. The daemon is
 * started by the CLI; `kiln e2b env` prints the three variables and they are the only
 * configuration the SDK gets (process.env, as `eval "$(kiln e2b env)"` would set them). The checks
 * are e2b-sdk.checks.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import * as e2b from 'e2b';
import * as e2b245 from 'e2b-2.45';
import * as e2b27 from 'e2b-2.7';
import { kilnSync, ownQemus, parseE2bEnv, removeStateDir, type CliResult } from '../helpers/kilnd.ts';
import { e2bSdkChecks, type SdkUnderTest } from './e2b-sdk.checks.ts';

let state: string;
let env: NodeJS.ProcessEnv;
const kiln = (...args: string[]): CliResult => kilnSync(env, ...args);

/** The version matrix; older releases are typed as the pinned one, `lacks` says what they miss. */
const MATRIX: SdkUnderTest[] = [
  { name: 'e2b@2.51.0', mod: e2b, lacks: {} },
  { name: 'e2b@2.45.0', mod: e2b245 as unknown as typeof e2b, lacks: { statusCode: true } },
  {
    name: 'e2b@2.7.0',
    mod: e2b27 as unknown as typeof e2b,
    lacks: {
      snapshots: true,
      lifecycle: true,
      infoNetwork: true,
      closeStdin: true,
      statusCode: true,
      fileMetadata: true,
      git: true,
    },
  },
];

describe(
  'the e2b SDK against kilnd (real guests), each release of the version matrix',
  { timeout: 3_600_000 },
  () => {
    before(async () => {
      state = await mkdtemp('/tmp/kiln-e2b-');
      env = {
        ...process.env,
        KILN_STATE_DIR: state,
        KILN_E2B_API_PORT: '0',
        KILN_E2B_SANDBOX_PORT: '0',
      };
      // Nothing but the variables `kiln e2b env` prints may steer the SDK.
      delete process.env['E2B_DOMAIN'];
      delete process.env['E2B_DEBUG'];
      delete process.env['E2B_ACCESS_TOKEN'];
      // What `eval "$(kiln e2b env)"` does, parsed here: the daemon starts on demand.
      const r = kiln('e2b', 'env');
      assert.equal(r.status, 0, r.stderr);
      const e = parseE2bEnv(r.stdout);
      process.env['E2B_API_URL'] = e.apiUrl;
      process.env['E2B_SANDBOX_URL'] = e.sandboxUrl;
      process.env['E2B_API_KEY'] = e.apiKey;
      process.env['E2B_VOLUME_API_URL'] = e.volumeApiUrl;
      assert.equal(kiln('e2b', 'env').stdout, r.stdout, 'the same key on every call');
    });
    after(() => removeStateDir(env, state));

    it('the matrix runs the releases it names', () => {
      assert.deepEqual(
        [e2b245, e2b27].map((m) => typeof m.Sandbox.create),
        ['function', 'function'],
      );
    });

    for (const sdk of MATRIX) e2bSdkChecks(sdk, kiln);

    describe('after every release', () => {
      it('nothing is left behind: no live sandbox, one QEMU per live sandbox', async () => {
        assert.deepEqual(await e2b.Sandbox.list().nextItems(), []);
        assert.deepEqual(ownQemus(state), []);
      });
    });
  },
);
