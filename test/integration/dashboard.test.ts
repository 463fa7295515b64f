/**
 * The web dashboard end to end: a real kilnd (started by the CLI) with real guests, Debian's
 * Chromium driven headless by playwright-core, and the unmodified `e2b` SDK on the other side.
 * Sign-in (a wrong key refused), the live table, the CPU chart, the terminal (a real PTY),
 * upload, fork with a count, pause / resume / kill, CSRF refusal, a template build's log
 * streaming in while it builds, the images table; screenshots of every page are saved under
 * the artefact dir this test prints.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { Sandbox } from 'e2b';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { CHROMIUM_FLAGS } from '../helpers/chromium.ts';
import { CLI, kilnSync, removeStateDir, useKilnE2bEnv } from '../helpers/kilnd.ts';

let state: string;
let profile: string;
let artefacts: string;
/** Whether a test failed: the screenshots are kept for it, else removed with the rest. */
let failed = false;
let env: NodeJS.ProcessEnv;
let url: string;
let apiKey: string;
let ctx: BrowserContext;
let page: Page;
let sbx: Sandbox | undefined;

const shot = async (name: string): Promise<void> => {
  await page.screenshot({ path: join(artefacts, `${name}.png`), fullPage: true });
};

/** Polls `fn` until it is truthy (or fails with `what` after `ms`). */
async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end)
      throw new Error(`${what}: not within ${ms} ms${last instanceof Error ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const sdkState = async (id: string): Promise<string> => {
  try {
    return (await Sandbox.getInfo(id)).state;
  } catch (e) {
    return `gone: ${(e as Error).name}`;
  }
};

describe('the web dashboard in Chromium against a real kilnd', { timeout: 1_800_000 }, () => {
  before(async () => {
    state = await mkdtemp('/tmp/kiln-dash-');
    profile = await mkdtemp('/tmp/kiln-dash-chromium-');
    artefacts = await mkdtemp('/tmp/kiln-dash-artefacts-');
    env = {
      ...process.env,
      KILN_STATE_DIR: state,
      KILN_E2B_API_PORT: '0',
      KILN_E2B_SANDBOX_PORT: '0',
      KILN_DASHBOARD_PORT: '0',
    };
    delete process.env['E2B_DOMAIN'];
    delete process.env['E2B_DEBUG'];
    useKilnE2bEnv(env);
    apiKey = process.env['E2B_API_KEY'] ?? '';
    const d = kilnSync(env, 'dashboard', '--json');
    assert.equal(d.status, 0, d.stderr);
    url = (JSON.parse(d.stdout) as { url: string }).url;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1400, height: 900 },
    });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('dialog', (dlg) => void dlg.accept());
  });

  afterEach((t) => {
    // A test's context has `passed` at run time (Node >= 21.7); @types/node 24 lists it on suites only.
    failed ||= 'passed' in t && !t.passed;
  });

  after(async () => {
    await ctx.close().catch(() => undefined);
    if (sbx) await sbx.kill().catch(() => undefined);
    await removeStateDir(env, state);
    await rm(profile, { recursive: true, force: true });
    if (failed) process.stderr.write(`dashboard test screenshots, kept as a test failed: ${artefacts}\n`);
    else await rm(artefacts, { recursive: true, force: true });
  });

  it('nothing answers without a session; a wrong key is refused', async () => {
    const api = await fetch(`${url}api/sandboxes`);
    assert.equal(api.status, 401);
    const live = await fetch(`${url}api/live`);
    assert.equal(live.status, 401);
    const asset = await fetch(`${url}assets/index.js`);
    assert.equal(asset.status, 401);
    await page.goto(url);
    assert.match(page.url(), /\/login$/);
    await page.getByLabel('API key').fill('e2b_0000000000000000000000000000000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').waitFor();
    assert.match(await page.getByRole('alert').innerText(), /not valid/);
    assert.equal((await ctx.cookies()).filter((c) => c.name === 'kiln_session').length, 0);
    await shot('login-refused');
  });

  it('signs in with a key: an HttpOnly, SameSite=Strict session cookie', async () => {
    await page.getByLabel('API key').fill(apiKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('navigation', { name: 'Dashboard' }).waitFor();
    const c = (await ctx.cookies()).find((x) => x.name === 'kiln_session');
    assert.ok(c);
    assert.equal(c.httpOnly, true);
    assert.equal(c.sameSite, 'Strict');
  });

  it('refuses an action without the CSRF token (and takes it with one)', async () => {
    const r = await page.evaluate(async () => {
      const no = await fetch('/api/sandboxes/sbx-none/kill', { method: 'POST' });
      const s = (await (await fetch('/api/session')).json()) as { csrf: string };
      const yes = await fetch('/api/sandboxes/sbx-none/kill', {
        method: 'POST',
        headers: { 'x-csrf-token': s.csrf },
      });
      return { no: [no.status, ((await no.json()) as { code: string }).code], yes: yes.status };
    });
    assert.deepEqual(r.no, [403, 'forbidden']);
    assert.equal(r.yes, 404, 'with the token the request is served (the sandbox does not exist)');
  });

  it('a sandbox created through the e2b SDK appears in the table within 2 s', async (t) => {
    await page.goto(`${url}#/sandboxes`);
    await page.getByTestId('sandbox-table').waitFor();
    sbx = await Sandbox.create('base', { metadata: { made: 'dashboard-test' } });
    const t0 = Date.now();
    // Created means running for the SDK: the row must say so within 2 s.
    await page
      .locator(`tr[data-sandbox="${sbx.sandboxId}"][data-state="running"]`)
      .waitFor({ timeout: 2000 });
    const ms = Date.now() - t0;
    t.diagnostic(`the new sandbox was in the table after ${ms} ms`);
    assert.ok(ms <= 2000);
    assert.equal(
      await page.locator(`tr[data-sandbox="${sbx.sandboxId}"]`).getAttribute('data-state'),
      'running',
    );
    await page.getByRole('searchbox').fill('made=dashboard-test');
    assert.equal(await page.locator('tbody tr').count(), 1, 'the metadata filter keeps it');
    await shot('sandboxes');
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('sandboxes-phone');
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.getByRole('searchbox').fill('');
  });

  it("the sandbox's CPU chart shows a spike while `yes > /dev/null` runs", async (t) => {
    assert.ok(sbx);
    await page.goto(`${url}#/sandboxes/${sbx.sandboxId}`);
    const chart = page.getByTestId('chart-cpu');
    await chart.waitFor();
    // The restore's own CPU settles first: the spike must be yes's, not the boot's.
    const idle = await until('an idle CPU sample (< 40%)', 60_000, async () => {
      const v = await chart.getAttribute('data-last');
      return v && Number(v) < 40 ? v : undefined;
    });
    const yes = await sbx.commands.run('yes > /dev/null', { background: true });
    const busy = await until('a CPU sample above 60% while yes runs', 60_000, async () => {
      const v = Number((await chart.getAttribute('data-last')) || '0');
      return v > 60 ? v : undefined;
    });
    t.diagnostic(`CPU chart: ${idle}% idle, ${busy}% with yes running`);
    await shot('sandbox-cpu');
    await yes.kill();
  });

  it('the terminal runs `echo $((6*7))` and shows 42; Ctrl-C interrupts', async () => {
    assert.ok(sbx);
    await page.getByRole('button', { name: 'Open terminal' }).click();
    await page.getByText('Terminal: connected').waitFor({ timeout: 30_000 });
    const term = page.getByTestId('terminal');
    await term.click();
    const rows = term.locator('.xterm-rows');
    await until('a shell prompt', 30_000, async () => /\$\s*$/m.test(await rows.innerText()));
    await page.keyboard.type('echo $((6*7))\n');
    await until('42 on the screen', 20_000, async () => /^42\s*$/m.test(await rows.innerText()));
    await page.keyboard.type('sleep 300\n');
    await new Promise((r) => setTimeout(r, 1000));
    await page.keyboard.press('Control+C');
    await page.keyboard.type('echo ok-$((40+2))\n');
    await until('ok-42 after Ctrl-C', 20_000, async () => /^ok-42\s*$/m.test(await rows.innerText()));
    await page.keyboard.type('echo ünïcødé-✓\n');
    await until('UTF-8 echoed', 20_000, async () => /^ünïcødé-✓\s*$/m.test(await rows.innerText()));
    await shot('sandbox-terminal');
    await page.getByRole('button', { name: 'Close terminal' }).click();
  });

  it('a file uploaded in the browser is read back by the SDK', async () => {
    assert.ok(sbx);
    const content = `hello from the dashboard ${Date.now()}\n`;
    await page.getByTestId('upload').setInputFiles({
      name: 'dash-upload.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from(content),
    });
    await page.getByText('uploaded dash-upload.txt').waitFor({ timeout: 30_000 });
    assert.equal(await sbx.files.read('/home/user/dash-upload.txt'), content);
    await page.getByRole('link', { name: 'dash-upload.txt' }).waitFor();
    await shot('sandbox-files');
  });

  it('fork with a count: 2 chosen in the confirmation make 2 running sandboxes', async (t) => {
    assert.ok(sbx);
    const id = sbx.sandboxId;
    await page.getByRole('button', { name: `Fork ${id}` }).click();
    const dialog = page.getByRole('dialog', { name: `Fork ${id}` });
    await dialog.getByLabel('Number of forks').fill('2');
    await shot('sandbox-fork');
    const t0 = Date.now();
    await dialog.getByRole('button', { name: 'Fork into 2 sandboxes' }).click();
    const note = page.getByRole('status').filter({ hasText: 'forked into' });
    await note.waitFor({ timeout: 180_000 });
    const text = await note.innerText();
    t.diagnostic(`${text} (${Date.now() - t0} ms)`);
    const m = /^forked into 2 new sandboxes: (\S+), (\S+)$/.exec(text.trim());
    assert.ok(m?.[1] && m[2], text);
    const clones = [m[1], m[2]];
    assert.notEqual(clones[0], clones[1]);
    for (const c of clones) {
      assert.equal(await sdkState(c), 'running');
      // A clone has the source's files: the upload of the test before is there.
      const clone = await Sandbox.connect(c);
      assert.match(await clone.files.read('/home/user/dash-upload.txt'), /^hello from the dashboard/);
      await clone.kill();
    }
  });

  it('pause, resume and kill from the page are reflected by the SDK', async () => {
    assert.ok(sbx);
    const id = sbx.sandboxId;
    await page.getByRole('button', { name: `Pause ${id}` }).click();
    await until('paused for the SDK', 120_000, async () => (await sdkState(id)) === 'paused');
    await page.getByRole('button', { name: `Resume ${id}` }).click();
    await until('running for the SDK', 120_000, async () => (await sdkState(id)) === 'running');
    await page.locator(`h1 [data-state="running"]`).waitFor({ timeout: 10_000 });
    const again = await Sandbox.connect(id);
    assert.equal((await again.commands.run('echo back')).stdout, 'back\n');
    await page.getByRole('button', { name: `Kill ${id}` }).click();
    await until('gone for the SDK', 60_000, async () => (await sdkState(id)).startsWith('gone'));
    sbx = undefined;
  });

  it("a template build's log streams into the page line by line (one request, no polling)", async (t) => {
    const dir = await mkdtemp('/tmp/kiln-dash-ctx-');
    await writeFile(
      join(dir, 'Dockerfile'),
      'FROM base\nRUN for i in 1 2 3 4 5 6; do echo "tick-$i"; sleep 2; done\n',
    );
    const logRequests: string[] = [];
    const onRequest = (r: { url: () => string }): void => {
      if (r.url().includes('/builds/')) logRequests.push(r.url());
    };
    page.on('request', onRequest);
    const build = spawn(
      process.execPath,
      [CLI, 'template', 'build', '-f', join(dir, 'Dockerfile'), '--name', 'dash-built', dir],
      {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    build.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => build.on('close', r));
    try {
      await page.goto(`${url}#/templates`);
      const open = page.locator('tr[data-template="dash-built"] button');
      await until('the build in the templates table', 60_000, async () => {
        if ((await open.count()) > 0) return true;
        await page.reload();
        await page.getByTestId('templates').waitFor();
        return false;
      });
      await open.first().click();
      const log = page.getByTestId('build-log');
      // How many ticks the page shows, each time it is looked at, until the last one is there.
      const counts = new Set<number>();
      await until('tick-6 in the log', 300_000, async () => {
        const n = (await log.innerText()).match(/^\S+ {2}tick-\d$/gm)?.length ?? 0;
        counts.add(n);
        return n === 6;
      });
      t.diagnostic(`tick counts seen while the step ran: ${[...counts].sort().join(', ')}`);
      assert.ok(
        [...counts].filter((n) => n > 0 && n < 6).length >= 3,
        `the lines came one by one as the step wrote them (2 s apart), not at the end: saw ${[...counts].join(', ')}`,
      );
      await page.locator('[data-testid="build-status"][data-status="ready"]').waitFor({ timeout: 300_000 });
      assert.match(await log.innerText(), /template dash-built built in/);
      await shot('templates-build-log');
      assert.equal(await exited, 0, err);
      assert.deepEqual(
        logRequests.map((u) => new URL(u).pathname.replace(/[^/]+\/builds\/[^/]+/, 'T/builds/B')),
        ['/api/templates/T/builds/B/log'],
        'one stream for the whole build: no polling',
      );
    } finally {
      page.off('request', onRequest);
      if (build.exitCode === null) build.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the images table shows the base template's image", async () => {
    await page.goto(`${url}#/templates`);
    await page.reload();
    // The shared image cache may hold other tests' images too: the row whose templates name base.
    const row = page.locator('[data-testid="images"] tbody tr').filter({
      has: page.getByTestId('image-templates').filter({ hasText: /^(.*, )?base(, .*)?$/ }),
    });
    await row.first().waitFor();
    const text = await row.first().innerText();
    assert.match(text, /debian bookworm/);
    assert.match(text, /\d+(\.\d)? (MiB|GiB)/, 'its size on disk');
    assert.match(text, /\bdash-built\b/, 'the template built on base boots from the same image');
    await shot('templates-images');
  });

  it('every other page renders (screenshots)', async () => {
    for (const [hash, name, ready] of [
      ['#/host', 'host', 'host-version'],
      ['#/templates', 'templates', 'templates'],
      ['#/snapshots', 'snapshots', 'snapshots'],
      ['#/keys', 'keys', 'keys'],
    ] as const) {
      await page.goto(`${url}${hash}`);
      await page.getByTestId(ready).waitFor();
      await shot(name);
    }
    assert.ok(
      (await page.locator('[data-testid="keys"] tbody tr').count()) >= 1,
      'the kiln e2b env key is listed',
    );
  });

  it('signs out: the session is gone', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/login$/);
    const r = await page.evaluate(async () => (await fetch('/api/session')).status);
    assert.equal(r, 401);
  });
});
