/**
 * E2B's sandbox logs from kiln's per-sandbox events (the lifecycle: created, paused, resumed,
 * timed out, ...; up to EVENTS_KEPT per sandbox). `GET /sandboxes/:id/logs` (deprecated:
 * `SandboxLogs`) and `GET /v2/sandboxes/:id/logs` (`SandboxLogsV2Response`). An ended sandbox's
 * logs stay readable until its record is purged, as E2B keeps them after the sandbox ends.
 */
import type { EventLevel, EventRecord } from '../../core/domain.ts';
import { invalidArgument } from '../../core/errors.ts';
import { sees } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { queryEnum } from '../parse.ts';
import { callerOf, idOf, noSandbox, type E2bDeps } from './deps.ts';

/** `SandboxLogEntry`. */
interface E2bLogEntry {
  timestamp: string;
  level: EventLevel;
  message: string;
  fields: Record<string, string>;
}

const LEVELS: EventLevel[] = ['debug', 'info', 'warn', 'error'];
/** The most entries one answer holds (the spec's `limit` maximum and default). */
const MAX_LOGS = 1000;
/** The spec's longest `search`. */
const MAX_SEARCH = 256;

/** Every event of a sandbox the caller sees (in order), else `not_found`. */
function events(d: E2bDeps, c: Ctx): EventRecord[] {
  const id = idOf(c);
  const s = d.svc.get(id);
  if (!sees(callerOf(d, c), s.ownerKeyId)) throw noSandbox(id);
  const out: EventRecord[] = [];
  let cursor: string | undefined;
  do {
    const page = d.svc.logs(id, { limit: MAX_LOGS, ...(cursor ? { cursor } : {}) });
    out.push(...page.items);
    cursor = page.next;
  } while (cursor);
  return out;
}

const entry = (e: EventRecord): E2bLogEntry => ({
  timestamp: e.at,
  level: e.level,
  message: e.message,
  fields: Object.fromEntries(
    Object.entries(e.data ?? {}).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
  ),
});

/** An integer query value from 0 to `max` (milliseconds or a count). */
function intQuery(q: URLSearchParams, name: string, max: number): number | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  if (!/^\d{1,15}$/.test(v) || Number(v) > max)
    throw invalidArgument(name, `"${v}" is not an integer from 0 to ${max}`);
  return Number(v);
}

/** v1: the entries from `start` (unix ms) on, oldest first, at most `limit`. */
function logsV1(
  d: E2bDeps,
  c: Ctx,
): { logs: { timestamp: string; line: string }[]; logEntries: E2bLogEntry[] } {
  const start = intQuery(c.query, 'start', Number.MAX_SAFE_INTEGER) ?? 0;
  const limit = intQuery(c.query, 'limit', Number.MAX_SAFE_INTEGER) ?? MAX_LOGS;
  const picked = events(d, c)
    .filter((e) => Date.parse(e.at) >= start)
    .slice(0, limit);
  return {
    logs: picked.map((e) => ({ timestamp: e.at, line: e.message })),
    logEntries: picked.map(entry),
  };
}

/**
 * v2: `forward` (the default) answers the entries at or after `cursor` (unix ms) oldest first,
 * `backward` those at or before it newest first; `level` is the least level, `search` a
 * case-sensitive substring of the message.
 */
function logsV2(d: E2bDeps, c: Ctx): { logs: E2bLogEntry[] } {
  const q = c.query;
  const cursor = intQuery(q, 'cursor', Number.MAX_SAFE_INTEGER);
  const limit = intQuery(q, 'limit', MAX_LOGS) ?? MAX_LOGS;
  const [direction = 'forward'] = queryEnum(
    q,
    'direction',
    (s) => (s === 'forward' || s === 'backward' ? [s] : undefined),
    'forward or backward',
  );
  const [level = 'debug'] = queryEnum(
    q,
    'level',
    (s) => (LEVELS.includes(s as EventLevel) ? [s as EventLevel] : undefined),
    LEVELS.join(', '),
  );
  const search = q.get('search') ?? '';
  if (search.length > MAX_SEARCH) throw invalidArgument('search', `longer than ${MAX_SEARCH} characters`);
  const least = LEVELS.indexOf(level);
  const back = direction === 'backward';
  let picked = events(d, c).filter(
    (e) =>
      LEVELS.indexOf(e.level) >= least &&
      e.message.includes(search) &&
      (cursor === undefined || (back ? Date.parse(e.at) <= cursor : Date.parse(e.at) >= cursor)),
  );
  if (back) picked = picked.reverse();
  return { logs: picked.slice(0, limit).map(entry) };
}

export const logRoutes = (d: E2bDeps): Route[] => [
  { method: 'GET', path: '/sandboxes/:id/logs', handler: (c) => Promise.resolve(logsV1(d, c)) },
  { method: 'GET', path: '/v2/sandboxes/:id/logs', handler: (c) => Promise.resolve(logsV2(d, c)) },
];
