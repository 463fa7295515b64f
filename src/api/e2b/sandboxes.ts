/** E2B's sandbox routes: create, connect, list, get, kill, timeout, pause, fork, network. */
import { DEFAULT_CREATE_FLAGS, DEFAULT_FORK_COUNT } from '../../core/defaults.ts';
import type { SandboxState } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { parseNetwork, parseNetworkUpdate } from '../../core/network-parse.ts';
import { validateName } from '../../core/validate.ts';
import type { CreateRequest } from '../../daemon/sandbox-service.ts';
import { sendJson, type Ctx, type Route } from '../http.ts';
import { queryEnum, queryLimit, required, type Fields } from '../parse.ts';
import { e2bErrorBody } from './errors.ts';
import { MAX_LIST, callerOf, fields, idOf, live, type E2bDeps } from './deps.ts';
import type { E2bListedSandbox, E2bSandbox } from './views.ts';

const RUNNING: SandboxState[] = ['running', 'resuming'];
const PAUSED: SandboxState[] = ['paused', 'pausing'];
const E2B_STATES: Record<string, SandboxState[] | undefined> = { running: RUNNING, paused: PAUSED };

/** `NewSandbox`, checked before anything slow (a first create builds the base template). */
function parseCreate(f: Fields): CreateRequest {
  const template = f.raw('templateID');
  if (typeof template !== 'string' || template === '')
    throw invalidArgument('templateID', 'is required (a template name or id, e.g. "base")');
  validateName('templateID', template);
  if (f.has('volumeMounts')) throw invalidArgument('volumeMounts', 'volumes are not supported by kiln');
  // Parsed before anything slow: a bad rule is a 400 naming it (core/network-parse.ts).
  const network = parseNetwork(f.raw('network'), f.bool('allow_internet_access'), {
    field: 'network',
    nulls: 'absent',
  });
  const autoPause = f.bool('autoPause') ?? DEFAULT_CREATE_FLAGS.autoPause;
  const autoResume =
    f.object('autoResume', 'an object {enabled: boolean}')?.bool('enabled') ??
    DEFAULT_CREATE_FLAGS.autoResume;
  if (autoResume && !autoPause)
    throw invalidArgument('autoResume', 'needs autoPause: a sandbox resumes only from a pause');
  const timeoutS = f.int('timeout');
  const metadata = f.stringMap('metadata');
  const envVars = f.stringMap('envVars');
  return {
    template,
    ...(timeoutS === undefined ? {} : { timeoutS }),
    ...(metadata === undefined ? {} : { metadata }),
    ...(envVars === undefined ? {} : { envVars }),
    autoPause,
    autoResume,
    network,
  };
}

async function create(d: E2bDeps, c: Ctx): Promise<E2bSandbox> {
  const req = parseCreate(await fields(c));
  const caller = callerOf(d, c);
  await d.templates.ensure(req.template, c.opId);
  return d.views.sandbox(await d.svc.create(req, { opId: c.opId, caller }));
}

/** Connecting to a paused sandbox resumes it (201, as in E2B); see daemon/connect.ts. */
async function connect(d: E2bDeps, c: Ctx): Promise<E2bSandbox | null> {
  const id = idOf(c);
  const timeoutS = (await fields(c)).int('timeout');
  live(d.svc, id, callerOf(d, c));
  const r = await d.connector.connect(id, { timeoutS }, { opId: c.opId });
  if (!r.resumed) return d.views.sandbox(r.sandbox);
  sendJson(c.res, 201, d.views.sandbox(r.sandbox));
  return null;
}

function list(d: E2bDeps, c: Ctx): E2bListedSandbox[] {
  const q = c.query;
  const states = queryEnum(q, 'state', (s) => E2B_STATES[s], 'a sandbox state (running, paused)');
  const metadata: Record<string, string> = {};
  // The SDK percent-encodes each key and value, then the pairs as a query string.
  for (const [k, v] of new URLSearchParams(q.get('metadata') ?? '')) {
    try {
      metadata[decodeURIComponent(k)] = decodeURIComponent(v);
    } catch {
      throw invalidArgument('metadata', `"${k}=${v}" is not a valid percent-encoded pair`);
    }
  }
  const limit = queryLimit(q, MAX_LIST, MAX_LIST);
  const caller = callerOf(d, c);
  const page = d.svc.list(
    {
      states: states.length ? states : [...RUNNING, ...PAUSED],
      metadata,
      ...(caller.admin ? {} : { ownerKeyId: caller.keyId }),
    },
    { limit, cursor: q.get('nextToken') ?? undefined },
  );
  if (page.next) c.res.setHeader('x-next-token', page.next);
  return page.items.map(d.views.listed);
}

async function kill(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  live(d.svc, id, callerOf(d, c));
  await d.svc.kill(id, { opId: c.opId });
  return null;
}

async function setTimeout(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const t = required('timeout', (await fields(c)).int('timeout'), ' (seconds from now)');
  live(d.svc, id, callerOf(d, c));
  d.svc.setTimeout(id, t);
  return null;
}

/** Body `{memory}`: kiln always keeps memory (a superset of a filesystem-only pause). */
async function pause(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const caller = callerOf(d, c);
  const s = live(d.svc, id, caller);
  if (s.state === 'paused' || s.state === 'pausing')
    throw new KilnError('invalid_state', `sandbox ${id} is already paused`);
  await d.svc.pause(id, { opId: c.opId, caller });
  return null;
}

/**
 * `SandboxNetworkUpdateConfig`: replaces the egress rules (omitted fields are cleared, as in
 * E2B). Running or paused (kiln stores a paused sandbox's rules for its resume); a dead or
 * unknown sandbox is 404, like every E2B route.
 */
async function updateNetwork(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const egress = parseNetworkUpdate(await c.body(), 'allow_internet_access', { nulls: 'absent' });
  live(d.svc, id, callerOf(d, c));
  await d.svc.updateNetwork(id, egress, { opId: c.opId });
  return null;
}

async function fork(d: E2bDeps, c: Ctx): Promise<unknown[]> {
  const id = idOf(c);
  const f = await fields(c);
  const count = f.int('count') ?? DEFAULT_FORK_COUNT;
  const timeoutS = f.int('timeout');
  const caller = callerOf(d, c);
  live(d.svc, id, caller);
  const r = await d.svc.fork(
    id,
    { count, ...(timeoutS === undefined ? {} : { timeoutS }) },
    { opId: c.opId, caller },
  );
  return r.results.map((x) =>
    'sandbox' in x ? { sandbox: d.views.sandbox(x.sandbox) } : { error: e2bErrorBody(x.error) },
  );
}

export const sandboxRoutes = (d: E2bDeps): Route[] => [
  { method: 'POST', path: '/v2/sandboxes', status: 201, handler: (c) => create(d, c) },
  { method: 'POST', path: '/v2/sandboxes/:id/connect', handler: (c) => connect(d, c) },
  { method: 'GET', path: '/v2/sandboxes', handler: (c) => Promise.resolve(list(d, c)) },
  {
    method: 'GET',
    path: '/sandboxes/:id',
    handler: (c) => Promise.resolve(d.views.detail(live(d.svc, idOf(c), callerOf(d, c)))),
  },
  { method: 'DELETE', path: '/sandboxes/:id', status: 204, handler: (c) => kill(d, c) },
  { method: 'POST', path: '/sandboxes/:id/timeout', status: 204, handler: (c) => setTimeout(d, c) },
  { method: 'POST', path: '/sandboxes/:id/pause', status: 204, handler: (c) => pause(d, c) },
  { method: 'POST', path: '/sandboxes/:id/fork', status: 201, handler: (c) => fork(d, c) },
  { method: 'PUT', path: '/sandboxes/:id/network', status: 204, handler: (c) => updateNetwork(d, c) },
];
