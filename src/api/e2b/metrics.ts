/**
 * E2B's metrics routes: `GET /sandboxes/:id/metrics` (the guest's latest sample within the
 * asked `start`..`end` range, or none) and `GET /sandboxes/metrics` (the latest sample of each
 * of up to 100 sandboxes). kiln keeps no history of samples: the latest is the only one.
 */
import type { SandboxRecord } from '../../core/domain.ts';
import { invalidArgument, isKilnError } from '../../core/errors.ts';
import { sees } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { MAX_LIST, callerOf, idOf, live, type E2bDeps } from './deps.ts';

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

/** A running sandbox's latest sample; none for another state or one that stops meanwhile. */
async function sample(d: E2bDeps, s: SandboxRecord, opId: string): Promise<E2bMetric | undefined> {
  if (s.state !== 'running') return undefined;
  const m = await d.svc.guestMetrics(s.id, { opId }).catch((e: unknown) => {
    // A sandbox that stops between the check and the call simply has no metrics.
    if (isKilnError(e) && e.code === 'invalid_state') return undefined;
    throw e;
  });
  if (!m) return undefined;
  return {
    timestamp: new Date(m.ts * 1000).toISOString(),
    timestampUnix: m.ts,
    cpuCount: m.cpu_count,
    cpuUsedPct: m.cpu_used_pct,
    memUsed: m.mem_used,
    memTotal: m.mem_total,
    memCache: m.mem_cache,
    diskUsed: m.disk_used,
    diskTotal: m.disk_total,
  };
}

/** A `start`/`end` query value: unix seconds, an integer >= 0. */
function unixQuery(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  if (!/^\d{1,15}$/.test(v)) throw invalidArgument(name, `"${v}" is not a unix time in seconds`);
  return Number(v);
}

async function metrics(d: E2bDeps, c: Ctx): Promise<E2bMetric[]> {
  const start = unixQuery(c.query, 'start');
  const end = unixQuery(c.query, 'end');
  if (start !== undefined && end !== undefined && start > end)
    throw invalidArgument('start', `${start} is after end ${end}`);
  const m = await sample(d, live(d.svc, idOf(c), callerOf(d, c)), c.opId);
  if (!m) return [];
  // A sample outside the asked window is not in it (E2B answers the samples of the window).
  if ((start !== undefined && m.timestampUnix < start) || (end !== undefined && m.timestampUnix > end))
    return [];
  return [m];
}

/** `SandboxesWithMetrics`: sandboxes that are unknown, not the caller's or not running are left out. */
async function batch(d: E2bDeps, c: Ctx): Promise<{ sandboxes: Record<string, E2bMetric> }> {
  const ids = [...new Set((c.query.get('sandbox_ids') ?? '').split(',').filter((x) => x !== ''))];
  if (ids.length === 0) throw invalidArgument('sandbox_ids', 'is required (comma-separated sandbox ids)');
  if (ids.length > MAX_LIST)
    throw invalidArgument('sandbox_ids', `at most ${MAX_LIST} ids, got ${ids.length}`);
  const caller = callerOf(d, c);
  const out: Record<string, E2bMetric> = {};
  for (const id of ids) {
    let s: SandboxRecord;
    try {
      s = d.svc.get(id);
    } catch (e) {
      if (isKilnError(e) && (e.code === 'not_found' || e.code === 'invalid_argument')) continue;
      throw e;
    }
    if (!sees(caller, s.ownerKeyId)) continue;
    const m = await sample(d, s, c.opId);
    if (m) out[id] = m;
  }
  return { sandboxes: out };
}

export const metricsRoutes = (d: E2bDeps): Route[] => [
  // Before `/sandboxes/:id` (E2B's sandbox get) so that `metrics` is not taken for an id.
  { method: 'GET', path: '/sandboxes/metrics', handler: (c) => batch(d, c) },
  { method: 'GET', path: '/sandboxes/:id/metrics', handler: (c) => metrics(d, c) },
];
