/**
 * POST /v1/template-builds with `fromImageRegistry` (what `kiln template build -f
 * --registry-user` sends; fake driver, in-process router): the credentials are taken but no
 * answer, build record, log line or status shows the password; aws is a 400 naming the field. This harness serves no OCI images, so the build itself fails at its base.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NativeHarness } from '../testing/harness.ts';

const SECRET = 'pw-7d2a-SECRET';

describe('native API: template builds with registry credentials', () => {
  let h: NativeHarness;
  /** The build's status once it has ended. */
  const ended = async (id: string) => {
    for (let i = 0; ; i++) {
      const st = await h.call('GET', `/v1/template-builds/${id}`);
      if (st.json?.['status'] !== 'building' || i > 200) return st;
      await new Promise((res) => setTimeout(res, 20));
    }
  };
  before(async () => (h = await NativeHarness.start({ base: true, builds: true })));
  after(() => h.close());

  it('takes them, shows them nowhere', async () => {
    const r = await h.call('POST', '/v1/template-builds', {
      name: 'priv',
      fromImage: '127.0.0.1:5000/private/app:1',
      fromImageRegistry: { type: 'registry', username: 'robot', password: SECRET },
      steps: [{ type: 'RUN', args: ['true'] }],
    });
    assert.equal(r.status, 201, r.text);
    const id = String(r.json?.['id']);
    const st = await ended(id);
    assert.equal(st.json?.['status'], 'error');
    assert.match(JSON.stringify(st.json['reason']), /OCI images are not served by this kilnd/);
    for (const text of [r.text, st.text, JSON.stringify(h.store.getBuild(id))])
      assert.ok(!text.includes(SECRET), text);
  });

  it('aws is a 400 naming fromImageRegistry.type; the name stays free', async () => {
    for (const reg of [
      { type: 'aws', awsAccessKeyId: 'AKIA', awsSecretAccessKey: SECRET, awsRegion: 'eu-west-1' },
    ]) {
      const r = await h.call('POST', '/v1/template-builds', {
        name: `cloud-${reg.type}`,
        fromImage: 'reg.example/app:1',
        fromImageRegistry: reg,
      });
      assert.equal(r.status, 400, r.text);
      assert.equal((r.json?.['details'] as { field?: string } | undefined)?.field, 'fromImageRegistry.type');
      assert.match(
        String(r.json?.['message']),
        new RegExp(`^fromImageRegistry.type: "${reg.type}" is not supported: `),
      );
      assert.ok(!r.text.includes(SECRET), r.text);
      // The refused build ended: its name is free at once.
      const again = await h.call('POST', '/v1/template-builds', {
        name: `cloud-${reg.type}`,
        fromTemplate: 'base',
      });
      assert.equal(again.status, 201, again.text);
      assert.equal((await ended(String(again.json?.['id']))).json?.['status'], 'ready');
    }
  });
});
