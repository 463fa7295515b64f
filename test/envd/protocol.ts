/** The envd suite (envd.suite.ts), protocol and security: access tokens, /init, signatures, users. */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { Sandbox } from 'e2b';
import { fetchAgent, type Current } from './helpers.ts';
import type { EnvdTarget } from './envd.suite.ts';

export function protocolTests(current: () => Current): void {
  describe('protocol and security', () => {
    let t: EnvdTarget, sbx: Sandbox;
    before(() => ({ t, sbx } = current()));
    const agentFetch = (path: string, init?: RequestInit): Promise<Response> => fetchAgent(t, path, init);

    it('requests without the access token are 401; a token is not accepted by another agent state', async () => {
      const r = await agentFetch(`/process.Process/List`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      assert.equal(r.status, 401);
      const w = await agentFetch(`/envs`, { headers: { 'x-access-token': 'wrong' } });
      assert.equal(w.status, 401);
      const h = await agentFetch(`/health`);
      assert.equal(h.status, 204, '/health needs no token');
    });

    it('unknown methods, malformed JSON and a non-existent user get clear errors and the agent keeps serving', async () => {
      const hdr = { 'content-type': 'application/json', 'x-access-token': t.accessToken };
      const unknown = await agentFetch(`/process.Process/Nope`, {
        method: 'POST',
        headers: hdr,
        body: '{}',
      });
      assert.equal(unknown.status, 404);
      const bad = await agentFetch(`/filesystem.Filesystem/Stat`, {
        method: 'POST',
        headers: hdr,
        body: '{not json',
      });
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { code: string }).code, 'invalid_argument');
      const badProto = await agentFetch(`/filesystem.Filesystem/Stat`, {
        method: 'POST',
        headers: { 'content-type': 'application/proto', 'x-access-token': t.accessToken },
        body: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0x0f]),
      });
      assert.ok(badProto.status >= 400, `malformed protobuf refused (${badProto.status})`);
      assert.match(((await badProto.json()) as { message: string }).message, /parse binary/);
      const goodProto = await agentFetch(`/filesystem.Filesystem/Stat`, {
        method: 'POST',
        headers: { 'content-type': 'application/proto', 'x-access-token': t.accessToken },
        body: new Uint8Array([0x0a, 0x01, 0x2f]), // StatRequest{path: "/"}
      });
      assert.equal(goodProto.status, 200, 'the binary encoding works too');
      assert.equal(goodProto.headers.get('content-type'), 'application/proto');
      const missing = await agentFetch(`/filesystem.Filesystem/Stat`, {
        method: 'POST',
        headers: hdr,
        body: '{"path":"/no/such"}',
      });
      assert.equal(missing.status, 404);
      await assert.rejects(
        sbx.commands.run('true', { user: 'nobody-here' }),
        /invalid username|unauthenticated|Authentication/i,
      );
      const noUser = await agentFetch(`/files?path=/etc/hostname&username=nobody-here`, {
        headers: { 'x-access-token': t.accessToken },
      });
      assert.equal(noUser.status, 401);
      const env = await agentFetch(`/envs`, { headers: { 'x-access-token': t.accessToken } });
      assert.equal(env.status, 200);
      assert.equal(((await env.json()) as Record<string, string>)['KILN_INIT_VAR'], 'from-init');
      const m = (await (
        await agentFetch(`/metrics`, { headers: { 'x-access-token': t.accessToken } })
      ).json()) as Record<string, number>;
      assert.ok((m['mem_total'] ?? 0) > 0 && (m['disk_total'] ?? 0) > 0 && (m['cpu_count'] ?? 0) >= 1);
      assert.equal(
        (await sbx.commands.run('echo $KILN_INIT_VAR')).stdout,
        'from-init\n',
        '/init env vars reach commands',
      );
    });

    it('/init sets the guest clock from the host time it carries (as after a snapshot restore)', async (c) => {
      if (!t.disposable) {
        c.skip("only on a throwaway VM's own clock");
        return;
      }
      const ahead = Date.now() + 3 * 3600_000; // pretend the host is 3 h ahead of the guest
      const r = await agentFetch(`/init`, {
        method: 'POST',
        headers: { 'x-access-token': t.accessToken },
        body: JSON.stringify({
          accessToken: t.accessToken,
          envVars: { KILN_INIT_VAR: 'from-init' },
          timestamp: new Date(ahead).toISOString(),
        }),
      });
      assert.equal(r.status, 204);
      const guest = Number((await sbx.commands.run('date +%s')).stdout.trim()) * 1000;
      assert.ok(
        Math.abs(guest - ahead) < 120_000,
        `guest clock ${new Date(guest).toISOString()} ~ ${new Date(ahead).toISOString()}`,
      );
      const replay = await agentFetch(`/init`, {
        method: 'POST',
        headers: { 'x-access-token': t.accessToken },
        body: JSON.stringify({
          accessToken: 'stolen',
          timestamp: new Date(Date.now() - 3600_000).toISOString(),
        }),
      });
      assert.equal(replay.status, 204);
      const still = await agentFetch(`/envs`, { headers: { 'x-access-token': t.accessToken } });
      assert.equal(still.status, 200, 'an older /init (a replay) changed nothing');
    });

    it('paths cannot escape what a non-root user may read or write', async () => {
      const other = t.otherUser.name;
      await assert.rejects(sbx.files.read('/etc/shadow', { user: other }), /permission denied|403/i);
      await assert.rejects(sbx.files.write('/etc/kiln-evil', 'x', { user: other }), /permission denied|403/i);
      await assert.rejects(sbx.files.read('/etc/../etc/shadow', { user: other }), /permission denied|403/i);
      // A symlink the user can reach, pointing where the user cannot go.
      const link = `/tmp/kiln-rootlink-${process.pid}-${Date.now()}`;
      await sbx.commands.run(`ln -sfn /root ${link}`, { user: 'root' });
      try {
        await assert.rejects(sbx.files.list(link, { user: other }), /permission denied/i);
        await assert.rejects(
          sbx.files.write(`${link}/planted`, 'x', { user: other }),
          /permission denied|403/i,
        );
        assert.equal(await sbx.files.exists('/root/planted', { user: 'root' }), false);
      } finally {
        await sbx.commands.run(`rm -f ${link}`, { user: 'root' });
      }
      assert.equal(
        await sbx.files.read('/etc/hostname', { user: other }).then(() => 'readable'),
        'readable',
        'what others may read stays readable',
      );
    });
  });
}
