/** The dashboard's sandbox routes: the list, one sandbox, its events, actions, the live stream. */
import type { DashEvent, DashFork, DashSandbox, DashSandboxDetail } from '../../core/dashboard-types.ts';
import type { SandboxState } from '../../core/domain.ts';
import { invalidArgument } from '../../core/errors.ts';
import { sees } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { callerOf, fields, opCtx, visibleSandbox, type DashboardDeps } from './deps.ts';
import type { LiveHub } from './live.ts';
import { openSse } from './sse.ts';
import { sampleView, sandboxView, snapshotView, templateNames } from './views.ts';

const STATES: SandboxState[] = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing', 'dead'];

/** `?state=a,b&metadata=k=v&metadata=k2=v2` */
function listFilter(q: URLSearchParams): { states: SandboxState[]; metadata: Record<string, string> } {
  const states = (q.get('state') ?? 'creating,running,pausing,paused,resuming,killing')
    .split(',')
    .filter(Boolean) as SandboxState[];
  for (const s of states) if (!STATES.includes(s)) throw invalidArgument('state', `unknown state "${s}"`);
  const metadata: Record<string, string> = {};
  for (const kv of q.getAll('metadata')) {
    const i = kv.indexOf('=');
    if (i <= 0) throw invalidArgument('metadata', `"${kv}" is not KEY=VALUE`);
    metadata[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { states, metadata };
}

function list(d: DashboardDeps, c: Ctx): DashSandbox[] {
  const f = listFilter(c.query);
  const caller = callerOf(c);
  const names = templateNames(d.svc);
  return d.svc
    .list({ states: f.states, metadata: f.metadata, order: 'desc' }, { limit: 1000 })
    .items.filter((s) => sees(caller, s.ownerKeyId))
    .map((s) => sandboxView(d.svc, s, names));
}

function detail(d: DashboardDeps, c: Ctx): DashSandboxDetail {
  const s = visibleSandbox(d, c);
  const history = d.svc.statsHistory(s.id);
  return {
    ...sandboxView(d.svc, s, templateNames(d.svc), history),
    history: history.map(sampleView),
    autoPause: s.autoPause,
    sandboxDomain: d.sandboxDomain(),
  };
}

function events(d: DashboardDeps, c: Ctx): { items: DashEvent[]; next: string | null } {
  const s = visibleSandbox(d, c);
  const cursor = c.query.get('cursor') ?? undefined;
  const page = d.svc.logs(s.id, { limit: 50, cursor });
  return {
    items: page.items.map((e) => ({ seq: e.seq, at: e.at, level: e.level, message: e.message })),
    next: page.next ?? null,
  };
}

/** POST /api/sandboxes/:id/<action>: kill, pause, resume, timeout, snapshot, fork. */
async function action(d: DashboardDeps, c: Ctx, what: string): Promise<unknown> {
  const s = visibleSandbox(d, c);
  const f = await fields(c);
  const ctx = opCtx(c);
  switch (what) {
    case 'kill':
      await d.svc.kill(s.id, ctx);
      return { ok: true };
    case 'pause':
      await d.svc.pause(s.id, ctx);
      return { ok: true };
    case 'resume':
      await d.svc.resume(s.id, { timeoutS: f.int('timeoutS') ?? 300 }, ctx);
      return { ok: true };
    case 'timeout': {
      const r = d.svc.setTimeout(s.id, f.int('timeoutS') ?? 300);
      return { endAt: r.endAt };
    }
    case 'snapshot': {
      const name = f.string('name');
      return snapshotView(await d.svc.snapshot(s.id, name ? { name } : {}, ctx));
    }
    case 'fork': {
      // 1..MAX_FORK clones (the service refuses others); each clone's outcome is its own.
      const r = await d.svc.fork(s.id, { count: f.int('count') ?? 1 }, ctx);
      const view: DashFork = { snapshotId: r.snapshot.id, sandboxes: [], errors: [] };
      for (const x of r.results)
        if ('sandbox' in x) view.sandboxes.push(x.sandbox.id);
        else view.errors.push(x.error.message);
      return view;
    }
    default:
      throw invalidArgument('action', `unknown action "${what}"`);
  }
}

export const sandboxRoutes = (d: DashboardDeps, hub: LiveHub): Route[] => [
  { method: 'GET', path: '/api/sandboxes', handler: (c) => Promise.resolve(list(d, c)) },
  { method: 'GET', path: '/api/sandboxes/:id', handler: (c) => Promise.resolve(detail(d, c)) },
  { method: 'GET', path: '/api/sandboxes/:id/events', handler: (c) => Promise.resolve(events(d, c)) },
  ...['kill', 'pause', 'resume', 'timeout', 'snapshot', 'fork'].map((a): Route => ({
    method: 'POST',
    path: `/api/sandboxes/:id/${a}`,
    handler: (c) => action(d, c, a),
  })),
  {
    method: 'GET',
    path: '/api/live',
    handler: async (c) => {
      const sandbox = c.query.get('sandbox') ?? undefined;
      if (sandbox) visibleSandbox(d, c, sandbox);
      const stream = openSse(c.req, c.res);
      hub.add(stream, callerOf(c), sandbox);
      await stream.closed;
      return null;
    },
  },
];
