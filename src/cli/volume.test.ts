/**
 * `kiln volume create|list|rm` and `kiln sandbox create --volume`, run as the real CLI against
 * the native API served on the state dir's socket (fake-driver service).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cliOnHarness } from '../../test/helpers/cli.ts';

describe('kiln volume', () => {
  const { kiln, harness } = cliOnHarness('kiln-cli-vol-');

  it('create prints the id; list shows who mounts it; rm is refused while mounted, then works', async () => {
    const made = await kiln('volume', 'create', 'data');
    assert.equal(made.status, 0, made.stderr);
    const id = made.stdout.trim();
    assert.match(id, /^vol-[a-z0-9]+$/);
    const s = await kiln('sandbox', 'create', '--volume', 'data:/mnt/data', '--json');
    assert.equal(s.status, 0, s.stderr);
    const sbx = (JSON.parse(s.stdout) as { sandboxId: string }).sandboxId;
    const listed = await kiln('volume', 'list', '--json');
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { id: string; mountedBy: string[] }[]).map((v) => [v.id, v.mountedBy]),
      [[id, [sbx]]],
    );
    assert.match((await kiln('volume', 'ls')).stdout, new RegExp(`${id}\\s+data\\s+\\S+\\s+${sbx}`));
    const busy = await kiln('volume', 'rm', 'data');
    assert.notEqual(busy.status, 0);
    assert.match(busy.stderr, new RegExp(`volume "${id}" is mounted by sandbox ${sbx}`));
    const bad = await kiln('sandbox', 'create', '--volume', 'data');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--volume data: expected NAME:\/PATH/);
    await harness().svc.kill(sbx);
    const rm = await kiln('volume', 'rm', 'data');
    assert.equal(rm.status, 0, rm.stderr);
    assert.equal((await kiln('volume', 'list', '--json')).stdout.trim(), '[]');
  });
});
