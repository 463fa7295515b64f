/**
 * A hostile local process racing kilnd to every new guest agent port (issue 10): it watches
 * /proc/net/tcp for TCP ports that start listening on `host` after it started and, every 10-30 ms,
 * connects to each and sends envd requests without a token (Filesystem.MakeDir, Process.Start,
 * POST /files, POST /init). Run as its own process:
 *
 *     node test/helpers/port-racer.ts '{"host":"127.77.0.1","prefix":"/root/racer","marker":"/tmp/x"}'
 *
 * It prints `ready` once watching, and on SIGTERM one JSON line `{ports, attempts, statuses, errors}`
 * (statuses and errors counted per kind) and stops.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { request } from 'node:http';

interface RacerOpts {
  host: string;
  /** Directory prefix of what the requests try to create in the guest. */
  prefix: string;
  /** Only ports of processes whose command line contains this (the test's own QEMUs). */
  marker: string;
  /** Pause between attempts on one port, ms (default [10, 30]). */
  intervalMs?: [number, number];
  /** Which requests to cycle through (default all). */
  kinds?: ('makedir' | 'start' | 'files' | 'init' | 'connect')[];
}

const o = JSON.parse(process.argv[2] ?? '{}') as RacerOpts;
const hexHost = o.host
  .split('.')
  .map((x) => Number(x).toString(16).padStart(2, '0'))
  .reverse()
  .join('')
  .toUpperCase();

/** Listening ports on `host` -> socket inode. */
function listening(): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    const [addr, port] = (f[1] ?? '').split(':');
    if (f[3] === '0A' && addr === hexHost && port) out.set(parseInt(port, 16), f[9] ?? '');
  }
  return out;
}

/** Socket inodes held by processes whose command line contains the marker. */
function markedSockets(): Set<string> {
  const out = new Set<string>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(o.marker)) continue;
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) out.add(m[1]);
      }
    } catch {
      // the process went away, or is not ours to read
    }
  }
  return out;
}

const seen = new Set(listening().keys());
let stopped = false;
const ports = new Set<number>();
let attempts = 0;
const statuses: Record<string, number> = {};
const errors: Record<string, number> = {};
let n = 0;

const ALL: Record<string, { path: string; body: string; type: string }> = {
  makedir: { path: '/filesystem.Filesystem/MakeDir', body: '', type: 'application/json' },
  start: {
    path: '/process.Process/Start',
    body: JSON.stringify({ process: { cmd: '/bin/sh', args: ['-c', `mkdir -p ${o.prefix}-proc`] } }),
    type: 'application/json',
  },
  files: {
    path: '/files?path=' + encodeURIComponent(`${o.prefix}-file`),
    body: 'x',
    type: 'application/octet-stream',
  },
  init: { path: '/init', body: JSON.stringify({ accessToken: 'racer' }), type: 'application/json' },
  connect: { path: '', body: '', type: '' },
};
const REQUESTS = (o.kinds ?? ['makedir', 'start', 'files', 'init']).map((k) => ALL[k] ?? ALL['connect']);

const count = (m: Record<string, number>, k: string): void => {
  m[k] = (m[k] ?? 0) + 1;
};

/** Consecutive refused connects per port: a port whose VM ended is left alone. */
const refused = new Map<number, number>();

function attack(port: number): void {
  attempts++;
  const r = REQUESTS[n++ % REQUESTS.length] ?? REQUESTS[0];
  if (!r) return;
  if (r.path === '') {
    // A bare connect, closed at once.
    const s = connect(port, o.host, () => {
      count(statuses, 'connect ok');
      s.destroy();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      failed(port, e);
    });
    return;
  }
  const body =
    r.path === '/filesystem.Filesystem/MakeDir' ? JSON.stringify({ path: `${o.prefix}-${n}` }) : r.body;
  const req = request(
    {
      host: o.host,
      port,
      method: 'POST',
      path: r.path,
      agent: false,
      timeout: 5000,
      headers: { 'content-type': r.type, 'content-length': Buffer.byteLength(body) },
    },
    (res) => {
      refused.set(port, 0);
      count(statuses, `${r.path.split('?')[0] ?? ''} ${res.statusCode ?? 0}`);
      res.resume();
    },
  );
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e: NodeJS.ErrnoException) => {
    failed(port, e);
  });
  req.end(body);
}

function failed(port: number, e: NodeJS.ErrnoException): void {
  count(errors, e.code ?? e.message);
  refused.set(port, e.code === 'ECONNREFUSED' ? (refused.get(port) ?? 0) + 1 : 0);
}

const scan = setInterval(() => {
  const fresh = [...listening()].filter(([p]) => !seen.has(p));
  if (!fresh.length) return;
  const ours = markedSockets();
  for (const [p, inode] of fresh) {
    seen.add(p);
    if (!ours.has(inode)) continue;
    ports.add(p);
    const tick = (): void => {
      if (stopped || (refused.get(p) ?? 0) > 50) return;
      attack(p);
      const [lo, hi] = o.intervalMs ?? [10, 30];
      setTimeout(tick, lo + Math.random() * (hi - lo)).unref();
    };
    tick();
  }
}, 5);

// SIGTERM: report and stop attacking; the process ends once requests in flight are done.
process.on('SIGTERM', () => {
  stopped = true;
  clearInterval(scan);
  process.stdout.write(JSON.stringify({ ports: [...ports], attempts, statuses, errors }) + '\n');
});
process.stdout.write('ready\n');
