/** Numbers and times as people read them. */
export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export const age = (iso: string, now: number): string => duration(now - Date.parse(iso));

export function timeLeft(endAt: string, state: string, now: number): string {
  if (state !== 'running') return '-';
  const ms = Date.parse(endAt) - now;
  return ms <= 0 ? 'ending' : duration(ms);
}

export const when = (iso: string | null): string => (iso ? new Date(iso).toLocaleString() : '-');
