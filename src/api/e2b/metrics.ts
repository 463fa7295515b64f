/** E2B's `GET /sandboxes/:id/metrics`: the guest's latest sample, or none. */
import { isKilnError } from '../../core/errors.ts';
import type { Ctx, Route } from '../http.ts';
import { callerOf, idOf, live, type E2bDeps } from './deps.ts';

/** `SandboxMetric`. */
interface E2bMetric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

async function metrics(d: E2bDeps, c: Ctx): Promise<E2bMetric[]> {
  const id = idOf(c);
  const s = live(d.svc, id, callerOf(d, c));
  if (s.state !== 'running') return [];
  const m = await d.svc.guestMetrics(id, { opId: c.opId }).catch((e: unknown) => {
    // A sandbox that stops between the check and the call simply has no metrics.
    if (isKilnError(e) && e.code === 'invalid_state') return undefined;
    throw e;
  });
  if (!m) return [];
  return [
    {
      timestamp: new Date(m.ts * 1000).toISOString(),
      timestampUnix: m.ts,
      cpuCount: m.cpu_count,
      cpuUsedPct: m.cpu_used_pct,
      memUsed: m.mem_used,
      memTotal: m.mem_total,
      memCache: m.mem_cache,
      diskUsed: m.disk_used,
      diskTotal: m.disk_total,
    },
  ];
}

export const metricsRoutes = (d: E2bDeps): Route[] => [
  { method: 'GET', path: '/sandboxes/:id/metrics', handler: (c) => metrics(d, c) },
];
