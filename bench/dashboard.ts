/**
 * bench/dashboard, in one run against one kilnd (issue 16):
 * 1. What an open dashboard costs a create: create-to-first-exec with no page open, beside the
 *    same with L dashboard pages listening (default 3 live SSE streams, signed in like a browser,
 *    so kilnd's live ticker lists sandboxes every second and reads the host figures), in
 *    interleaved pairs (ABBA); median of N pairs (default 20). Target: no measurable cost.
 * 2. The sandboxes page with S sandboxes (default 100) in headless Chromium: from navigation to
 *    the table showing every row, median of R loads (default 5), beside the same page with no
 *    sandbox measured in the same browser before they were created. Target: under 1 s.
 *
 *   scripts/node bench/dashboard.ts [--runs N] [--listeners L] [--sandboxes S] [--loads R] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createToFirstExecMs } from './kiln-measure.ts';
import { benchArgs, median, percentile } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { CHROMIUM_FLAGS } from '../test/helpers/chromium.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';

const args = benchArgs({ runs: 20, listeners: 3, sandboxes: 100, loads: 5 });
const say = (s: string): void => {
  if (!args.json) process.stderr.write(`${s}\n`);
};

/** Redeems a one-time sign-in link as a browser would: the session cookie it sets. */
function signIn(link: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request(link, (res) => {
      res.resume();
      const cookie = (res.headers['set-cookie'] ?? [])[0]?.split(';')[0];
      if (res.statusCode !== 303 || !cookie) reject(new Error(`sign-in answered ${res.statusCode}`));
      else resolve(cookie);
    })
      .on('error', reject)
      .end();
  });
}

/** A page's live stream (GET /api/live), read and dropped until closed. */
function listen(base: string, cookie: string): Promise<() => void> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL('/api/live', base),
      { headers: { cookie, accept: 'text/event-stream' } },
      (res) => {
        if (res.statusCode !== 200) {
          reject(new Error(`/api/live answered ${res.statusCode}`));
          return;
        }
        res.on('data', () => {
          /* dropped */
        });
        res.once('data', () => {
          resolve(() => {
            req.destroy();
          });
        });
      },
    );
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end();
  });
}

/** Milliseconds from opening a live stream to its first sandbox list (kilnd's part of a page load). */
function firstListMs(base: string, cookie: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      new URL('/api/live', base),
      { headers: { cookie, accept: 'text/event-stream' } },
      (res) => {
        let buf = '';
        res.on('data', (d: Buffer) => {
          buf += d.toString();
          const end = buf.indexOf('\n\n', buf.indexOf('event: sandboxes'));
          if (buf.includes('event: sandboxes') && end >= 0) {
            resolve(performance.now() - t0);
            req.destroy();
          }
        });
      },
    );
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end();
  });
}

async function createCost(c: KilnClient, base: string) {
  const cookies = await Promise.all(
    Array.from({ length: args.listeners }, async () => signIn((await c.dashboard(true)).url)),
  );
  const without: number[] = [];
  const withPages: number[] = [];
  await createToFirstExecMs(c); // warm the path once
  const withOpenPages = async (): Promise<number> => {
    const closers = await Promise.all(cookies.map((k) => listen(base, k)));
    try {
      return await createToFirstExecMs(c);
    } finally {
      for (const close of closers) close();
    }
  };
  for (let i = 0; i < args.runs; i++) {
    // Alternate which goes first (ABBA), so that neither always follows the other's kill.
    if (i % 2 === 0) {
      without.push(await createToFirstExecMs(c));
      withPages.push(await withOpenPages());
    } else {
      withPages.push(await withOpenPages());
      without.push(await createToFirstExecMs(c));
    }
    say(
      `pair ${i + 1}/${args.runs}: no page ${without.at(-1)?.toFixed(0)} ms, ${args.listeners} pages ${withPages.at(-1)?.toFixed(0)} ms`,
    );
  }
  const diffs = without.map((w, i) => (withPages[i] ?? 0) - w);
  return {
    withoutMedianMs: Math.round(median(without)),
    withPagesMedianMs: Math.round(median(withPages)),
    pairDiffMedianMs: Math.round(median(diffs)),
    pairDiffP90Ms: Math.round(percentile(diffs.map(Math.abs), 90)),
  };
}

/** Milliseconds from navigation to the sandboxes table showing `rows` rows; median of `loads`. */
async function renderMs(page: Page, base: string, rows: number): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < args.loads; i++) {
    await page.goto('about:blank'); // a whole page load each time, not a hash change
    const t0 = performance.now();
    await page.goto(new URL('/#/sandboxes', base).href);
    // Locators, not an evaluated predicate: the page's CSP forbids eval.
    await page
      .getByRole('status')
      .filter({ hasText: `${rows} of ${rows}` })
      .waitFor({ timeout: 30_000 });
    if (rows > 0)
      await page
        .locator('[data-testid="sandbox-table"] tbody tr[data-sandbox]')
        .nth(rows - 1)
        .waitFor({ timeout: 30_000 });
    ms.push(performance.now() - t0);
  }
  return Math.round(median(ms));
}

async function main(): Promise<void> {
  await ensureDefaultImage();
  const root = await mkdtemp('/tmp/kiln-bdash-');
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'warn' }),
    dashboardPort: 0,
    // 100 guests of 512 MiB promise more than the host's memory: restored clones share pages.
    overcommitRatio: 4,
    diskOvercommitRatio: 20,
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  const base = kilnd.dashboardUrl;
  const ids: string[] = [];
  let browser: Browser | undefined;
  try {
    say('building the template');
    await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
    say(`create-to-first-exec: no page vs ${args.listeners} live pages, ${args.runs} pairs`);
    const create = await createCost(c, base);

    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_FLAGS,
    });
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto((await c.dashboard(true)).url);
    const emptyMs = await renderMs(page, base, 0);
    for (let i = 0; i < args.sandboxes; i++) {
      ids.push((await c.createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId);
      if ((i + 1) % 10 === 0) say(`created ${i + 1}/${args.sandboxes}`);
    }
    const fullMs = await renderMs(page, base, args.sandboxes);
    const cookie = await signIn((await c.dashboard(true)).url);
    const lists: number[] = [];
    for (let i = 0; i < args.loads; i++) lists.push(await firstListMs(base, cookie));
    const firstListMedianMs = Math.round(median(lists));
    const res = {
      bench: 'dashboard',
      createToFirstExec: { ...create, listeners: args.listeners, pairs: args.runs },
      sandboxesPage: {
        sandboxes: args.sandboxes,
        loads: args.loads,
        renderMs: fullMs,
        emptyRenderMs: emptyMs,
      },
      targets: { createCost: 'none measurable', renderMs: 1000 },
    };
    if (args.json) {
      console.log(JSON.stringify(res));
      return;
    }
    console.log('bench/dashboard (TCG)');
    console.log(
      `  create -> first exec: no page ${create.withoutMedianMs} ms, ${args.listeners} live pages ${create.withPagesMedianMs} ms (median of ${args.runs} pairs; pair differences: median ${create.pairDiffMedianMs} ms, |p90| ${create.pairDiffP90Ms} ms)`,
    );
    console.log(
      `  sandboxes page, navigation -> every row shown: ${args.sandboxes} sandboxes ${fullMs} ms (target < 1000), none ${emptyMs} ms (median of ${args.loads}); of which kilnd's live stream to its first list of ${args.sandboxes}: ${firstListMedianMs} ms`,
    );
  } finally {
    await browser?.close();
    for (const id of ids) await c.killSandbox(id).catch(() => undefined);
    await kilnd.close();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
