/**
 * bench/net: what sandbox network isolation (issue 12) costs. Every figure is measured in one run
 * beside the same QEMU with plain user-mode networking (a second kilnd with
 * KILN_NETWORK=unisolated: no namespace), interleaved:
 * 1. create -> first exec output (native API), isolated vs unisolated. Target: isolation adds at
 *    most 30 ms at the median. Also a network slot's acquire alone (from a filled pool).
 * 2. TCP throughput guest -> test host: the guest `curl`s a file (default 64 MiB) from a python3
 *    http.server in a network namespace of the bench's own (test/helpers/net-peer.ts).
 * 3. TCP throughput host -> guest port: the same file from a python3 http.server in the guest,
 *    through kilnd's envd proxy (the published-port route, E2b-Sandbox-Port) and straight to the
 *    port's forward.
 * 4. HTTP latency of small GETs to the guest server, through the envd proxy and straight (p50/p95).
 * Needs root (network namespaces, nftables), as an isolated kilnd does.
 *
 *   scripts/node bench/net.ts [--runs N] [--transfers N] [--gets N] [--mib N] [--json]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { createToFirstExecMs } from './kiln-measure.ts';
import {
  getMs,
  guestCurl,
  hostCurl,
  hostLoad,
  mbps,
  portRoutes,
  spread,
  startGuestServer,
  type Spread,
} from './net-measure.ts';
import { benchArgs, median } from './stats.ts';
import { startKilnd, type Kilnd } from '../src/api/kilnd.ts';
import { ALWAYS_DENIED } from '../src/core/cidr.ts';
import { loadConfig } from '../src/core/config.ts';
import { createLogger, nullLogger } from '../src/core/log.ts';
import { SandboxNetworks, purgeNetworks } from '../src/net/sandbox-networks.ts';
import { KilnClient } from '../src/sdk/client.ts';
import { startNetPeer, type NetPeer } from '../test/helpers/net-peer.ts';
import { ensureDefaultImage } from '../test/helpers/image.ts';

const { runs, transfers, gets, mib, json } = benchArgs({ runs: 10, transfers: 3, gets: 30, mib: 64 });
const BYTES = mib * 1024 * 1024;
const OPEN = { allowOut: [], denyOut: [], internet: true };
const RULED = { allowOut: [], denyOut: ['192.0.2.0/24'], internet: true };

type Mode = 'isolated' | 'unisolated';
interface Side {
  mode: Mode;
  root: string;
  kilnd: Kilnd;
  c: KilnClient;
}
type Pair<T> = Record<Mode, T>;
const MODES: Mode[] = ['isolated', 'unisolated'];

async function openSide(mode: Mode): Promise<Side> {
  const root = await mkdtemp(`/tmp/kiln-bn${mode[0] ?? ''}-`);
  const kilnd = await startKilnd({
    stateDir: root,
    cacheDir: loadConfig().cacheDir,
    log: createLogger({ level: 'error' }),
    e2bApiPort: 0,
    e2bSandboxPort: 0,
    network: { mode },
  });
  const c = new KilnClient({ socketPath: kilnd.socketPath });
  await c.buildTemplate({ name: 'base', memoryMiB: 512, vcpus: 1 });
  return { mode, root, kilnd, c };
}

async function closeSide(s: Side): Promise<void> {
  for (const v of s.kilnd.svc.list().items)
    if (v.state !== 'dead') await s.kilnd.svc.kill(v.id).catch(() => undefined);
  await s.kilnd.close();
  if (s.mode === 'isolated') await purgeNetworks(s.root).catch(() => undefined);
  await rm(s.root, { recursive: true, force: true });
}

const log = (line: string): void => {
  if (!json) process.stderr.write(`${line}\n`);
};

/** Step 1: create -> first exec on both kilnds, interleaved after a warm-up of each. */
async function measureCreates(sides: Pair<Side>): Promise<Pair<number[]>> {
  const out: Pair<number[]> = { isolated: [], unisolated: [] };
  for (const m of MODES) await createToFirstExecMs(sides[m].c);
  for (let i = 0; i < runs; i++) {
    for (const m of MODES) out[m].push(await createToFirstExecMs(sides[m].c));
    log(
      `create ${i + 1}/${runs}: isolated ${out.isolated.at(-1)?.toFixed(0)} ms, unisolated ${out.unisolated.at(-1)?.toFixed(0)} ms`,
    );
  }
  return out;
}

/** A network slot's acquire from a filled pool (what isolation adds to a create), and its release. */
async function measureAcquire(): Promise<Slots> {
  const root = await mkdtemp('/tmp/kiln-bna-');
  const nets = await SandboxNetworks.open({
    stateDir: root,
    pool: '10.231.0.0/16',
    alwaysDenied: ALWAYS_DENIED.map((r) => r.cidr),
    uid: process.getuid?.() ?? 0,
    log: nullLogger,
  });
  const out: Slots = { acquire: [], acquireRuled: [], release: [] };
  try {
    await nets.reconcile([]);
    for (let i = 0; i < Math.max(runs, 10); i++) {
      for (const [rules, into] of [
        [OPEN, out.acquire],
        [RULED, out.acquireRuled],
      ] as const) {
        await nets.filled();
        let t0 = performance.now();
        const slot = await nets.acquire(rules, `bench-${i}`);
        into.push(performance.now() - t0);
        await nets.filled();
        t0 = performance.now();
        await nets.release(slot.namespace);
        out.release.push(performance.now() - t0);
      }
    }
  } finally {
    await nets.close();
    await purgeNetworks(root);
    await rm(root, { recursive: true, force: true });
  }
  return out;
}

interface Slots {
  acquire: number[];
  acquireRuled: number[];
  release: number[];
}

interface Flows {
  guestToPeer: number[];
  hostToGuestProxy: number[];
  hostToGuestDirect: number[];
  getProxy: number[];
  getDirect: number[];
}

/** Steps 2-4 on one live sandbox per kilnd, interleaved. */
async function measureFlows(sides: Pair<Side>, peer: NetPeer, peerPath: string): Promise<Pair<Flows>> {
  const ids = {} as Pair<string>;
  const out = {} as Pair<Flows>;
  for (const m of MODES) {
    ids[m] = (await sides[m].c.createSandbox({ template: 'base', timeoutS: 3600 })).sandboxId;
    await startGuestServer(sides[m].kilnd, ids[m], mib);
    out[m] = { guestToPeer: [], hostToGuestProxy: [], hostToGuestDirect: [], getProxy: [], getDirect: [] };
  }
  const routes = {
    isolated: await portRoutes(sides.isolated.kilnd, ids.isolated),
    unisolated: await portRoutes(sides.unisolated.kilnd, ids.unisolated),
  };
  const peerUrl = `http://${peer.addr}:${peer.httpPort}${peerPath}`;
  for (let i = 0; i < transfers; i++) {
    for (const m of MODES) {
      const r = routes[m];
      out[m].guestToPeer.push(mbps(await guestCurl(sides[m].kilnd, ids[m], peerUrl, BYTES)));
      out[m].hostToGuestProxy.push(mbps(await hostCurl(`${r.proxy.url}/big.bin`, BYTES, r.proxy.headers)));
      out[m].hostToGuestDirect.push(mbps(await hostCurl(`${r.direct}/big.bin`, BYTES)));
    }
    log(`transfer ${i + 1}/${transfers} done`);
  }
  const hdrs = (m: Mode): Record<string, string> =>
    Object.fromEntries(routes[m].proxy.headers.map((h) => h.split(': ') as [string, string]));
  for (const m of MODES) for (let i = 0; i < 3; i++) await getMs(`${routes[m].direct}/small.txt`); // warm
  for (let i = 0; i < gets; i++)
    for (const m of MODES) {
      out[m].getProxy.push(await getMs(`${routes[m].proxy.url}/small.txt`, hdrs(m)));
      out[m].getDirect.push(await getMs(`${routes[m].direct}/small.txt`));
    }
  for (const m of MODES) await sides[m].c.killSandbox(ids[m]);
  return out;
}

const r1 = (x: number): number => +x.toFixed(1);

function report(
  creates: Pair<number[]>,
  slot: Slots,
  flows: Pair<Flows>,
  load: { before: ReturnType<typeof hostLoad>; after: ReturnType<typeof hostLoad> },
): void {
  const med = (xs: number[]): number => r1(median(xs));
  const res = {
    bench: 'net',
    runs,
    transfers,
    gets,
    mib,
    createToFirstExecMs: { isolated: med(creates.isolated), unisolated: med(creates.unisolated) },
    isolationAddsMs: r1(median(creates.isolated) - median(creates.unisolated)),
    /** The median of each interleaved pair's difference (both ran under the same load). */
    isolationAddsPairedMs: r1(median(creates.isolated.map((x, i) => x - (creates.unisolated[i] ?? 0)))),
    targetAddsMs: 30,
    slotAcquireMs: spread(slot.acquire),
    slotAcquireRuledMs: spread(slot.acquireRuled),
    slotReleaseMs: spread(slot.release),
    guestToPeerMBps: {
      isolated: med(flows.isolated.guestToPeer),
      unisolated: med(flows.unisolated.guestToPeer),
    },
    hostToGuestProxyMBps: {
      isolated: med(flows.isolated.hostToGuestProxy),
      unisolated: med(flows.unisolated.hostToGuestProxy),
    },
    hostToGuestDirectMBps: {
      isolated: med(flows.isolated.hostToGuestDirect),
      unisolated: med(flows.unisolated.hostToGuestDirect),
    },
    getProxyMs: { isolated: spread(flows.isolated.getProxy), unisolated: spread(flows.unisolated.getProxy) },
    getDirectMs: {
      isolated: spread(flows.isolated.getDirect),
      unisolated: spread(flows.unisolated.getDirect),
    },
    createsMs: { isolated: creates.isolated.map(Math.round), unisolated: creates.unisolated.map(Math.round) },
    load,
  };
  if (json) {
    console.log(JSON.stringify(res));
    return;
  }
  printTable(res);
}

const fmt = (s: Spread): string => `p50 ${s.p50} / p95 ${s.p95} ms`;

function printTable(res: {
  createToFirstExecMs: Pair<number>;
  isolationAddsMs: number;
  isolationAddsPairedMs: number;
  slotAcquireMs: Spread;
  slotAcquireRuledMs: Spread;
  slotReleaseMs: Spread;
  guestToPeerMBps: Pair<number>;
  hostToGuestProxyMBps: Pair<number>;
  hostToGuestDirectMBps: Pair<number>;
  getProxyMs: Pair<Spread>;
  getDirectMs: Pair<Spread>;
  createsMs: Pair<number[]>;
  load: { before: ReturnType<typeof hostLoad>; after: ReturnType<typeof hostLoad> };
}): void {
  const row = (what: string, iso: string, plain: string): void => {
    console.log(`  ${what.padEnd(44)} ${iso.padEnd(26)} ${plain}`);
  };
  console.log(
    `bench/net (TCG, 512 MiB template; isolated = namespace + nftables, baseline = plain QEMU user-mode networking, same run)`,
  );
  row('', 'isolated', 'baseline (no namespace)');
  row(
    `create -> first exec, median of ${runs}`,
    `${res.createToFirstExecMs.isolated} ms`,
    `${res.createToFirstExecMs.unisolated} ms`,
  );
  row(`  isolation adds (target <= 30 ms)`, `${res.isolationAddsMs} ms`, '');
  row(`  median of the pairs' differences`, `${res.isolationAddsPairedMs} ms`, '');
  row(`  runs`, res.createsMs.isolated.join(' '), res.createsMs.unisolated.join(' '));
  row(`  network slot acquire, no rules (pool filled)`, fmt(res.slotAcquireMs), 'none (no slot)');
  row(`  network slot acquire, a deny rule`, fmt(res.slotAcquireRuledMs), 'none');
  row(`  network slot release (after the kill)`, fmt(res.slotReleaseMs), 'none');
  row(
    `guest -> test host, ${mib} MiB, median of ${transfers}`,
    `${res.guestToPeerMBps.isolated} MB/s`,
    `${res.guestToPeerMBps.unisolated} MB/s`,
  );
  row(
    `host -> guest port via envd proxy`,
    `${res.hostToGuestProxyMBps.isolated} MB/s`,
    `${res.hostToGuestProxyMBps.unisolated} MB/s`,
  );
  row(
    `host -> guest port direct (forward)`,
    `${res.hostToGuestDirectMBps.isolated} MB/s`,
    `${res.hostToGuestDirectMBps.unisolated} MB/s`,
  );
  row(
    `GET via envd proxy port route (${gets})`,
    fmt(res.getProxyMs.isolated),
    fmt(res.getProxyMs.unisolated),
  );
  row(`GET direct to the forward (${gets})`, fmt(res.getDirectMs.isolated), fmt(res.getDirectMs.unisolated));
  const l = res.load;
  console.log(
    `  meanwhile: load average ${l.before.loadavg1} at start, ${l.after.loadavg1} at end; other QEMU processes ${l.before.otherQemus} at start, ${l.after.otherQemus} at end`,
  );
}

async function main(): Promise<void> {
  await ensureDefaultImage();
  const before = hostLoad([]);
  const dir = await mkdtemp('/tmp/kiln-bn-www-');
  await writeFile(`${dir}/big.bin`, Buffer.alloc(BYTES));
  const peer = await startNetPeer(); // serves /tmp
  const opened: Side[] = [];
  try {
    for (const m of MODES) opened.push(await openSide(m));
    const [isolated, unisolated] = opened as [Side, Side];
    const sides = { isolated, unisolated };
    log('templates built');
    const creates = await measureCreates(sides);
    const slot = await measureAcquire();
    const flows = await measureFlows(sides, peer, `/${basename(dir)}/big.bin`);
    report(creates, slot, flows, { before, after: hostLoad(opened.map((s) => s.root)) });
  } finally {
    for (const s of opened) await closeSide(s).catch(() => undefined);
    await peer.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
