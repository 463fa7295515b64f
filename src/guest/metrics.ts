import { readFile, statfs } from 'node:fs/promises';
import { availableParallelism } from 'node:os';

let lastCpu: { idle: number; total: number } | undefined;

async function cpuSample(): Promise<{ idle: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { idle, total: v.reduce((a, b) => a + b, 0) };
}

/** envd's GET /metrics body: cpu, memory (bytes and MiB) and root disk use. */
export async function metrics(): Promise<Record<string, number>> {
  const now = await cpuSample();
  const prev = lastCpu;
  lastCpu = now;
  const dt = prev ? now.total - prev.total : 0;
  const cpuPct = prev && dt > 0 ? (100 * (dt - (now.idle - prev.idle))) / dt : 0;
  const mem = await readFile('/proc/meminfo', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(mem)?.[1] ?? 0) * 1024;
  const total = kb('MemTotal');
  const used = total - kb('MemAvailable');
  const disk = await statfs('/');
  return {
    ts: Math.floor(Date.now() / 1000),
    cpu_count: availableParallelism(),
    cpu_used_pct: Math.round(cpuPct * 100) / 100,
    mem_total_mib: Math.floor(total / 2 ** 20),
    mem_used_mib: Math.floor(used / 2 ** 20),
    mem_total: total,
    mem_used: used,
    mem_cache: kb('Cached'),
    disk_used: (disk.blocks - disk.bfree) * disk.bsize,
    disk_total: disk.blocks * disk.bsize,
  };
}
