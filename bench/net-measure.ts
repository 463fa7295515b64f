/** Measurements of bench/net: transfers and small GETs, timed from the host or inside a guest. */
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { promisify } from 'node:util';
import type { Kilnd } from '../src/api/kilnd.ts';
import { percentile } from './stats.ts';

const run = promisify(execFile);

/** The port the guest's python3 http.server listens on. */
export const GUEST_HTTP_PORT = 8000;

export interface Timed {
  bytes: number;
  seconds: number;
}

/** MB/s (10^6 bytes) of a transfer. */
export const mbps = (t: Timed): number => t.bytes / 1e6 / t.seconds;

const CURL_TIMING = ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}'];

function parseTiming(out: string, what: string, wantBytes: number): Timed {
  const [bytes, seconds] = out.trim().split(/\s+/).map(Number);
  if (bytes !== wantBytes || !seconds)
    throw new Error(`${what}: got "${out.trim()}", wanted ${wantBytes} bytes`);
  return { bytes, seconds };
}

/** `curl` on the host: the file at `url` (through kilnd's envd proxy when `headers` route it). */
export async function hostCurl(url: string, wantBytes: number, headers: string[] = []): Promise<Timed> {
  const r = await run('curl', [...CURL_TIMING, ...headers.flatMap((h) => ['-H', h]), url]);
  return parseTiming(r.stdout, `host curl ${url}`, wantBytes);
}

/** `curl` inside sandbox `id` of `kilnd`: the file at `url`. */
export async function guestCurl(kilnd: Kilnd, id: string, url: string, wantBytes: number): Promise<Timed> {
  const r = await kilnd.svc.exec(id, `curl ${CURL_TIMING.map((a) => `'${a}'`).join(' ')} '${url}'`);
  if (r.exitCode !== 0) throw new Error(`guest curl ${url}: exit ${r.exitCode}: ${r.stderr}`);
  return parseTiming(r.stdout, `guest curl ${url}`, wantBytes);
}

/**
 * Starts a python3 http.server on GUEST_HTTP_PORT in sandbox `id` serving /tmp/www (a `mib` MiB
 * `big.bin` and a 13-byte `small.txt`), and waits until it answers inside the guest.
 */
export async function startGuestServer(kilnd: Kilnd, id: string, mib: number): Promise<void> {
  const r = await kilnd.svc.exec(
    id,
    'mkdir -p /tmp/www && cd /tmp/www && echo "hello kiln!!" > small.txt && ' +
      `head -c ${mib}M /dev/zero > big.bin && ` +
      `(setsid python3 -m http.server ${GUEST_HTTP_PORT} --directory /tmp/www </dev/null >/dev/null 2>&1 &) && ` +
      `for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:${GUEST_HTTP_PORT}/small.txt && exit 0; sleep 0.1; done; exit 1`,
    { timeoutMs: 120_000 },
  );
  if (r.exitCode !== 0) throw new Error(`the guest HTTP server did not start: ${r.stderr}`);
}

/** The two ways the host reaches a guest port: kilnd's envd proxy (port route) and the forward itself. */
export interface PortRoutes {
  proxy: { url: string; headers: string[] };
  direct: string;
}

export async function portRoutes(kilnd: Kilnd, id: string): Promise<PortRoutes> {
  const { baseUrl } = await kilnd.svc.guestPort(id, GUEST_HTTP_PORT);
  return {
    proxy: {
      url: kilnd.e2bSandboxUrl,
      headers: [`E2b-Sandbox-Id: ${id}`, `E2b-Sandbox-Port: ${GUEST_HTTP_PORT}`],
    },
    direct: baseUrl,
  };
}

/** One small GET (a new connection: python's http.server speaks HTTP/1.0); its time in ms. */
export async function getMs(url: string, headers: Record<string, string> = {}): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(url, { headers });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200 || body !== 'hello kiln!!\n') throw new Error(`GET ${url}: ${res.status} ${body}`);
  return ms;
}

export interface Spread {
  p50: number;
  p95: number;
}

export const spread = (xs: number[]): Spread => ({
  p50: +percentile(xs, 50).toFixed(1),
  p95: +percentile(xs, 95).toFixed(1),
});

/** What else ran: the load average and how many QEMU processes not under `ours` (state dirs) ran. */
export function hostLoad(ours: readonly string[]): { loadavg1: number; otherQemus: number } {
  let otherQemus = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('qemu-system')) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!ours.some((d) => cmd.includes(d))) otherQemus += 1;
    } catch {
      // ended meanwhile
    }
  }
  return { loadavg1: +(loadavg()[0] ?? 0).toFixed(2), otherQemus };
}
