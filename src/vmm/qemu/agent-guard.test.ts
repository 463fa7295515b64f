import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { GUARD_TABLE, agentGuardRuleset, applyAgentGuard } from './agent-guard.ts';

test("the guard is kiln's own table, flushed and refilled in one transaction, rejecting other uids' SYNs", () => {
  const s = agentGuardRuleset({ uid: 0, net: '127.77.0.0/16' });
  assert.deepEqual(s.split('\n').slice(0, 3), [
    `table inet ${GUARD_TABLE}`,
    `flush table inet ${GUARD_TABLE}`,
    `table inet ${GUARD_TABLE} {`,
  ]);
  assert.match(s, /type filter hook output priority filter; policy accept;/);
  assert.match(
    s,
    /ip daddr 127\.77\.0\.0\/16 tcp flags & \(syn \| ack\) == syn meta skuid != 0 counter reject with tcp reset/,
  );
  assert.equal(s.match(/^\s*(table|chain|flush)\b/gm)?.length, 4, 'touches nothing but its own table');
  assert.equal(agentGuardRuleset({ uid: 0, net: '127.77.0.0/16' }), s, 'the same content every time');
  assert.throws(() => agentGuardRuleset({ uid: -1, net: '127.77.0.0/16' }), /uid/);
  assert.throws(() => agentGuardRuleset({ uid: 0, net: '0.0.0.0/0' }), /loopback/);
});

test('applies the ruleset with nft -f on stdin; a missing nft says what to install', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-nft-'));
  try {
    const fake = join(dir, 'nft');
    await writeFile(fake, `#!/bin/sh\necho "$@" > ${dir}/args\ncat > ${dir}/stdin\n`);
    await chmod(fake, 0o755);
    await applyAgentGuard({ uid: 1000, nftBinary: fake });
    assert.equal((await readFile(join(dir, 'args'), 'utf8')).trim(), '-f -');
    assert.equal(
      await readFile(join(dir, 'stdin'), 'utf8'),
      agentGuardRuleset({ uid: 1000, net: '127.77.0.0/16' }),
    );
    await assert.rejects(applyAgentGuard({ uid: 0, nftBinary: join(dir, 'no-nft') }), {
      code: 'missing_tool',
      message: /apt-get install nftables.*KILN_AGENT_GUARD=off/s,
    });
    const failing = join(dir, 'nft-fails');
    await writeFile(failing, '#!/bin/sh\necho "Operation not permitted" >&2\nexit 1\n');
    await chmod(failing, 0o755);
    await assert.rejects(applyAgentGuard({ uid: 0, nftBinary: failing }), {
      code: 'driver_error',
      message: /Operation not permitted.*CAP_NET_ADMIN/s,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
