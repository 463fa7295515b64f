/** The envd proxy in front of the fake-driver service: routing, auto-resume, refusals. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import { fileSignature } from '../../core/envd-auth.ts';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B envd proxy (fake driver)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  it('envd proxy: a paused autoResume sandbox resumes on its next request; without autoResume it stays paused', async () => {
    const mk = async (autoResume: boolean): Promise<string> => {
      const r = await h.raw('POST', '/v2/sandboxes', {
        templateID: 'base',
        autoPause: true,
        autoResume: { enabled: autoResume },
      });
      return (r.json as { sandboxID: string }).sandboxID;
    };
    const health = (id: string): Promise<Response> =>
      fetch(`${h.sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': id } });
    const [auto, manual] = [await mk(true), await mk(false)];
    for (const id of [auto, manual]) {
      assert.equal((await health(id)).status, 204, 'the proxy knows its port');
      await h.svc.pause(id);
    }
    const [a, b] = await Promise.all([health(auto), health(auto)]);
    assert.deepEqual([a.status, b.status], [204, 204], 'resumed once, on a new port');
    assert.equal(h.svc.get(auto).state, 'running');
    assert.equal((await health(manual)).status, 502);
    assert.equal(h.svc.get(manual).state, 'paused');
    for (const id of [auto, manual]) await h.svc.kill(id);
  });

  it('envd proxy: routes by E2b-Sandbox-Id, by URL signature or by access token; unknown, dead or unsigned get E2B error bodies', async () => {
    const sbx = await Sandbox.create('base', h.opts());
    const rec = h.svc.get(sbx.sandboxId);
    const health = await fetch(`${h.sandboxUrl}/health`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '49983' },
    });
    assert.equal(health.status, 204, 'reached the (fake) guest');
    const noHeader = await fetch(`${h.sandboxUrl}/health`);
    assert.equal(noHeader.status, 400);
    assert.match(((await noHeader.json()) as { message: string }).message, /missing E2b-Sandbox-Id/);
    // e2b@2.7's envd HTTP client sends the sandbox's access token but no E2b-Sandbox-Id.
    const byToken = await fetch(`${h.sandboxUrl}/health`, { headers: { 'x-access-token': rec.accessToken } });
    assert.equal(byToken.status, 204, 'routed to the sandbox whose token it is');
    const wrongToken = await fetch(`${h.sandboxUrl}/health`, { headers: { 'x-access-token': 'nope' } });
    assert.equal(wrongToken.status, 400);
    const unknown = await fetch(`${h.sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': 'sbx-nope' } });
    assert.equal(unknown.status, 502);
    assert.deepEqual(Object.keys((await unknown.json()) as object).sort(), ['code', 'message', 'sandboxId']);
    const port = await fetch(`${h.sandboxUrl}/health`, {
      headers: { 'e2b-sandbox-id': sbx.sandboxId, 'e2b-sandbox-port': '8080' },
    });
    assert.equal(port.status, 502);
    // A signed URL finds its sandbox by the token that signed it (the fake guest has no /files: 404).
    const sig = encodeURIComponent(fileSignature('/tmp/x', 'read', '', rec.accessToken, 2_000_000_000));
    const signed = await fetch(
      `${h.sandboxUrl}/files?path=%2Ftmp%2Fx&signature=${sig}&signature_expiration=2000000000`,
    );
    assert.equal(signed.status, 404, 'routed to the sandbox that signed it');
    const forged = await fetch(`${h.sandboxUrl}/files?path=%2Ftmp%2Fx&signature=v1_forged`);
    assert.equal(forged.status, 401);
    assert.deepEqual(await forged.json(), {
      code: 401,
      message: 'invalid signature: no running sandbox signed this URL',
    });
    await sbx.kill();
    const dead = await fetch(`${h.sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': sbx.sandboxId } });
    assert.equal(dead.status, 502, 'a killed sandbox is not reachable');
    const stale = await fetch(
      `${h.sandboxUrl}/files?path=%2Ftmp%2Fx&signature=${sig}&signature_expiration=2000000000`,
    );
    assert.equal(stale.status, 401, "a dead sandbox's URLs no longer route");
  });

  it('envd proxy: a sandbox marked unresponsive or stopped on a full disk is refused at once, saying why', async () => {
    const r = await h.raw('POST', '/v2/sandboxes', { templateID: 'base' });
    const id = (r.json as { sandboxID: string }).sandboxID;
    const health = (): Promise<Response> =>
      fetch(`${h.sandboxUrl}/health`, { headers: { 'e2b-sandbox-id': id } });
    assert.equal((await health()).status, 204);
    const since = new Date().toISOString();
    h.fx.guests.hung = true;
    try {
      h.store.updateSandbox(id, {
        condition: { code: 'unresponsive', message: 'its guest agent has not answered', since },
      });
      const hung = await health();
      assert.equal(hung.status, 502);
      assert.match(
        ((await hung.json()) as { message: string }).message,
        new RegExp(`sandbox ${id} is not responding`),
      );
      h.store.updateSandbox(id, {
        condition: { code: 'disk_full', message: 'the host has no space left', since },
      });
      const full = await health();
      assert.equal(full.status, 507);
      assert.match(((await full.json()) as { message: string }).message, /is stopped .*no space left/);
    } finally {
      h.fx.guests.hung = false;
    }
    // It answers again: the mark is cleared on the next request, which goes through.
    h.store.updateSandbox(id, {
      condition: { code: 'unresponsive', message: 'its guest agent has not answered', since },
    });
    assert.equal((await health()).status, 204);
    assert.equal(h.svc.get(id).condition, null);
    await h.svc.kill(id);
  });
});
