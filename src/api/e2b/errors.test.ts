/** The E2B API's answers to bad input: E2B error bodies, statuses from the catalog code. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { E2bHarness } from '../testing/harness.ts';

describe('E2B API: bad input (fake driver)', () => {
  let h: E2bHarness;
  before(async () => (h = await E2bHarness.start()));
  after(() => h.close());

  it('bad input: E2B error bodies with the status of the catalog code; nothing is left behind', async () => {
    const before = h.svc.list({}, { limit: 1000 }).items.length;
    const cases: [string, string, unknown, number, RegExp][] = [
      ['POST', '/v2/sandboxes', '{"templateID": ', 400, /^body: malformed JSON/],
      ['POST', '/v2/sandboxes', {}, 400, /^templateID: is required/],
      ['POST', '/v2/sandboxes', { templateID: 'nope' }, 404, /^template or snapshot "nope" does not exist$/],
      ['POST', '/v2/sandboxes', { templateID: 'base', timeout: -1 }, 400, /^timeout: must be between/],
      ['POST', '/v2/sandboxes', { templateID: 'base', timeout: 'x' }, 400, /^timeout: must be an integer/],
      ['POST', '/v2/sandboxes', { templateID: 'base', metadata: { a: 1 } }, 400, /^metadata: value of "a"/],
      ['POST', '/v2/sandboxes', { templateID: 'base', envVars: [1] }, 400, /^envVars: must be an object/],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', autoResume: { enabled: true } },
        400,
        /^autoResume: needs autoPause/,
      ],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', network: { denyOut: ['example.com'] } },
        400,
        /^network\.denyOut\[0\]: "example\.com": domain names are not supported for deny rules/,
      ],
      [
        'POST',
        '/v2/sandboxes',
        { templateID: 'base', allow_internet_access: 'no' },
        400,
        /allow_internet_access/,
      ],
      ['GET', '/v2/sandboxes?state=zombie', undefined, 400, /^state: "zombie" is not a sandbox state/],
      ['GET', '/v2/sandboxes?limit=0', undefined, 400, /^limit:/],
      ['GET', '/v2/sandboxes?nextToken=abc', undefined, 400, /^cursor:/],
      ['GET', '/sandboxes/sbx-nope', undefined, 404, /^sandbox "sbx-nope" does not exist$/],
      ['GET', '/sandboxes/a..b', undefined, 400, /^sandboxId:/],
      ['DELETE', '/sandboxes/sbx-nope', undefined, 404, /does not exist/],
      ['POST', '/sandboxes/sbx-nope/timeout', {}, 400, /^timeout: is required/],
      ['GET', '/nope', undefined, 404, /^no route GET \/nope$/],
    ];
    for (const [method, path, body, status, re] of cases) {
      const r = await h.raw(method, path, body);
      assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.json)}`);
      const j = r.json as { code: unknown; message: unknown };
      assert.deepEqual(Object.keys(j).sort(), ['code', 'message'], `${method} ${path}`);
      assert.equal(j.code, status, `${method} ${path}`);
      assert.match(String(j.message), re, `${method} ${path}`);
    }
    assert.equal(h.svc.list({}, { limit: 1000 }).items.length, before, 'no sandbox was created');
    assert.deepEqual(
      (await h.driver.list()).filter((id) => id.startsWith('sbx-')),
      h.svc.list({ states: ['running'] }, { limit: 1000 }).items.map((s) => s.id),
      'no VM without a running sandbox',
    );
  });
});
