/**
 * E2B's sandbox lists: `GET /v2/sandboxes` (running and paused, filters, pages) and the
 * deprecated `GET /sandboxes` (running only, metadata filter, no pages).
 */
import { BUILDER_METADATA_KEY } from '../../core/defaults.ts';
import type { SandboxState } from '../../core/domain.ts';
import { invalidArgument } from '../../core/errors.ts';
import type { SandboxFilter } from '../../store/store.ts';
import type { Ctx } from '../http.ts';
import { queryEnum, queryLimit } from '../parse.ts';
import { MAX_LIST, callerOf, type E2bDeps } from './deps.ts';
import type { E2bListedSandbox } from './views.ts';

export const RUNNING: SandboxState[] = ['running', 'resuming'];
export const PAUSED: SandboxState[] = ['paused', 'pausing'];
const E2B_STATES: Record<string, SandboxState[] | undefined> = { running: RUNNING, paused: PAUSED };

/** The `metadata` query: the SDK percent-encodes each key and value, then the pairs as a query string. */
function metadataQuery(q: URLSearchParams): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(q.get('metadata') ?? '')) {
    try {
      metadata[decodeURIComponent(k)] = decodeURIComponent(v);
    } catch {
      throw invalidArgument('metadata', `"${k}=${v}" is not a valid percent-encoded pair`);
    }
  }
  return metadata;
}

/** `startedAfter` (RFC 3339), as the store compares it (ISO, UTC, milliseconds). */
function startedAfter(q: URLSearchParams): { startedAfter?: string } {
  const v = q.get('startedAfter');
  if (v === null) return {};
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw invalidArgument('startedAfter', `"${v}" is not a date-time (RFC 3339)`);
  return { startedAfter: new Date(t).toISOString() };
}

/**
 * The `template` filter, a template id or name: a name that no template has matches no sandbox
 * (the id is then taken as given, and no sandbox has it).
 */
function templateFilter(d: E2bDeps, q: URLSearchParams): { templateId?: string } {
  const ref = q.get('template');
  if (!ref) return {};
  const t = d.svc.templates().find((x) => x.id === ref || x.name === ref);
  return { templateId: t ? t.id : ref };
}

/** `GET /v2/sandboxes`: newest first unless `order=asc`, as E2B's spec defines. */
export function listV2(d: E2bDeps, c: Ctx): E2bListedSandbox[] {
  const q = c.query;
  const states = queryEnum(q, 'state', (s) => E2B_STATES[s], 'a sandbox state (running, paused)');
  const order = queryEnum(q, 'order', (s) => (s === 'asc' || s === 'desc' ? [s] : undefined), 'asc or desc');
  const limit = queryLimit(q, MAX_LIST, MAX_LIST);
  const caller = callerOf(d, c);
  const filter: SandboxFilter = {
    states: states.length ? states : [...RUNNING, ...PAUSED],
    metadata: metadataQuery(q),
    withoutMetadataKey: BUILDER_METADATA_KEY,
    order: order[0] ?? 'desc',
    ...startedAfter(q),
    ...templateFilter(d, q),
    ...(caller.admin ? {} : { ownerKeyId: caller.keyId }),
  };
  const page = d.svc.list(filter, { limit, cursor: q.get('nextToken') ?? undefined });
  if (page.next) c.res.setHeader('x-next-token', page.next);
  return page.items.map(d.views.listed);
}

/** `GET /sandboxes` (deprecated): every running sandbox the caller sees, newest first. */
export function listV1(d: E2bDeps, c: Ctx): E2bListedSandbox[] {
  const caller = callerOf(d, c);
  const filter: SandboxFilter = {
    states: RUNNING,
    metadata: metadataQuery(c.query),
    withoutMetadataKey: BUILDER_METADATA_KEY,
    order: 'desc',
    ...(caller.admin ? {} : { ownerKeyId: caller.keyId }),
  };
  const out: E2bListedSandbox[] = [];
  let cursor: string | undefined;
  do {
    const page = d.svc.list(filter, { limit: MAX_LIST, ...(cursor ? { cursor } : {}) });
    out.push(...page.items.map(d.views.listed));
    cursor = page.next;
  } while (cursor);
  return out;
}
