import { mkdtemp, rm } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { rawRestoreMs, snapshotFiles } from './raw-qemu.ts';
import { median } from './stats.ts';
import { startKilnd } from '../src/api/kilnd.ts';
import { createLogger } from '../src/core/log.ts';
import { loadConfig } from '../src/core/config.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';
const N = Number(process.argv[2] ?? 6);
const img = await ensureDefaultImage();
const root = await mkdtemp('/tmp/kiln-pcr-');
const times: Record<string, number>[] = [];
const sink = new Writable({ write(chunk, _e, cb) { for (const l of String(chunk).split('\n')) { if (l.includes('sandbox created')) { const j = JSON.parse(l); times.push({ restoreMs: j.restoreMs, readyMs: j.readyMs, initMs: j.initMs }); } } cb(); } });
const kilnd = await startKilnd({ stateDir: root, cacheDir: loadConfig().cacheDir, log: createLogger({ level: "info", destination: sink as never }) });
const c = new KilnClient({ socketPath: kilnd.socketPath });
const tpl = await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
const snap = snapshotFiles(root, tpl.snapshotId ?? '', 512);
const rows: number[][] = [];
try {
  await rawRestoreMs(img, snap);
  for (let i = 0; i < N + 1; i++) {
    const raw = await rawRestoreMs(img, snap);
    const t0 = performance.now();
    const s = await c.createSandbox({ template: 'base' });
    const t1 = performance.now();
    await c.exec(s.sandboxId, 'echo ready', {});
    const t2 = performance.now();
    await c.exec(s.sandboxId, 'echo ready', {});
    const t3 = performance.now();
    await c.killSandbox(s.sandboxId);
    const t = times.at(-1)!;
    const row = [raw, t1 - t0, t.restoreMs!, t.readyMs!, t.initMs!, t2 - t1, t3 - t2];
    if (i > 0) rows.push(row);
    console.log(`raw ${row[0]!.toFixed(0)} create ${row[1]!.toFixed(0)} (restore ${row[2]} ready ${row[3]} init ${row[4]}) exec1 ${row[5]!.toFixed(0)} exec2 ${row[6]!.toFixed(0)}`);
  }
  console.log('median', [0,1,2,3,4,5,6].map((k) => median(rows.map((r) => r[k]!)).toFixed(0)).join(' '));
} finally {
  await kilnd.close();
  await rm(root, { recursive: true, force: true });
}
