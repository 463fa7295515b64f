import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { agentGuardRuleset, agentGuardTable, applyAgentGuard, removeAgentGuard } from './agent-guard.ts';

const TABLE = agentGuardTable('/var/lib/kiln-a');

test('each kilnd has its own table, named by a hash of its state dir', () => {
  assert.match(TABLE, /^kiln_agent_guard_[0-9a-f]{12}$/);
  assert.equal(agentGuardTable('/var/lib/kiln-a/'), TABLE, 'the same dir, the same table');
  assert.equal(agentGuardTable('/var/lib/../lib/kiln-a'), TABLE);
  assert.notEqual(agentGuardTable('/var/lib/kiln-b'), TABLE, 'another dir, another table');
});

test("the guard is the instance's own table, flushed and refilled in one transaction, rejecting other uids' SYNs", () => {
  const s = agentGuardRuleset({ table: TABLE, uid: 0, net: '127.77.0.0/16' });
  assert.deepEqual(s.split('\n').slice(0, 3), [
    `table inet ${TABLE}`,
    `flush table inet ${TABLE}`,
    `table inet ${TABLE} {`,
  ]);
  assert.match(s, /type filter hook output priority filter; policy accept;/);
  assert.match(
    s,
    /ip daddr 127\.77\.0\.0\/16 tcp flags & \(syn \| ack\) == syn meta skuid != 0 counter reject with tcp reset/,
  );
  assert.equal(s.match(/^\s*(table|chain|flush)\b/gm)?.length, 4, 'touches nothing but its own table');
  assert.equal(agentGuardRuleset({ table: TABLE, uid: 0, net: '127.77.0.0/16' }), s, 'the same every time');
  assert.throws(() => agentGuardRuleset({ table: TABLE, uid: -1, net: '127.77.0.0/16' }), /uid/);
  assert.throws(() => agentGuardRuleset({ table: TABLE, uid: 0, net: '0.0.0.0/0' }), /loopback/);
  assert.throws(() => agentGuardRuleset({ table: 'filter', uid: 0, net: '127.77.0.0/16' }), /table/);
});

/** A stand-in `nft` keeping one file per table in `state`: `-f -` creates, `delete table` removes. */
async function fakeNft(dir: string): Promise<{ nft: string; tables: () => Promise<string[]> }> {
  const state = join(dir, 'tables');
  await mkdir(state);
  const nft = join(dir, 'nft');
  await writeFile(
    nft,
    `#!/bin/sh
if [ "$1" = "-f" ]; then
  t=$(head -n1 | sed 's/^table inet //'); sleep 0.05; touch "${state}/$t"; exit 0
fi
if [ "$1" = delete ]; then
  [ -e "${state}/$4" ] || { echo "Error: Could not process rule: No such file or directory" >&2; exit 1; }
  rm "${state}/$4"; exit 0
fi
echo "Error: Operation not permitted" >&2; exit 1
`,
  );
  await chmod(nft, 0o755);
  return { nft, tables: async () => (await readdir(state)).sort() };
}

test('two kilnds starting and stopping at once: each removes only its own table', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-nft-'));
  try {
    const { nft, tables } = await fakeNft(dir);
    const [a, b] = [agentGuardTable(join(dir, 'state-a')), agentGuardTable(join(dir, 'state-b'))];
    await Promise.all([
      applyAgentGuard({ table: a, uid: 0, nftBinary: nft }),
      applyAgentGuard({ table: b, uid: 0, nftBinary: nft }),
    ]);
    assert.deepEqual(await tables(), [a, b].sort());
    await Promise.all([
      removeAgentGuard({ table: a, nftBinary: nft }),
      applyAgentGuard({ table: b, uid: 0, nftBinary: nft }),
    ]);
    assert.deepEqual(await tables(), [b], "a's stop left b's guard in place");
    // Removing a table that is gone already (a second stop) is fine; other nft errors are not.
    await removeAgentGuard({ table: a, nftBinary: nft });
    await removeAgentGuard({ table: b, nftBinary: nft });
    assert.deepEqual(await tables(), []);
    const failing = join(dir, 'nft-fails');
    await writeFile(failing, '#!/bin/sh\necho "Operation not permitted" >&2\nexit 1\n');
    await chmod(failing, 0o755);
    await assert.rejects(removeAgentGuard({ table: a, nftBinary: failing }), /Operation not permitted/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('applies the ruleset with nft -f on stdin; a missing nft says what to install', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-nft-'));
  try {
    const fake = join(dir, 'nft');
    await writeFile(fake, `#!/bin/sh\necho "$@" > ${dir}/args\ncat > ${dir}/stdin\n`);
    await chmod(fake, 0o755);
    await applyAgentGuard({ table: TABLE, uid: 1000, nftBinary: fake });
    assert.equal((await readFile(join(dir, 'args'), 'utf8')).trim(), '-f -');
    assert.equal(
      await readFile(join(dir, 'stdin'), 'utf8'),
      agentGuardRuleset({ table: TABLE, uid: 1000, net: '127.77.0.0/16' }),
    );
    await assert.rejects(applyAgentGuard({ table: TABLE, uid: 0, nftBinary: join(dir, 'no-nft') }), {
      code: 'missing_tool',
      message: /apt-get install nftables.*KILN_AGENT_GUARD=off/s,
    });
    const failing = join(dir, 'nft-fails');
    await writeFile(failing, '#!/bin/sh\necho "Operation not permitted" >&2\nexit 1\n');
    await chmod(failing, 0o755);
    await assert.rejects(applyAgentGuard({ table: TABLE, uid: 0, nftBinary: failing }), {
      code: 'driver_error',
      message: /Operation not permitted.*CAP_NET_ADMIN/s,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
