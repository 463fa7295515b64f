/**
 * E2B's sandbox routes: create, connect, list, get, kill, timeout, refreshes, pause, resume, fork,
 * network. Create, connect and list have a v1 and a v2 path (older SDKs call the v1 ones).
 */
import { parseVolumeMounts } from '../volumes.ts';
import { DEFAULT_CREATE_FLAGS, DEFAULT_FORK_COUNT } from '../../core/defaults.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { parseNetwork, parseNetworkUpdate } from '../../core/network-parse.ts';
import { validateName } from '../../core/validate.ts';
import type { CreateRequest } from '../../daemon/sandbox-service.ts';
import { sendJson, type Ctx, type Route } from '../http.ts';
import { required, type Fields } from '../parse.ts';
import { e2bErrorBody } from './errors.ts';
import { callerOf, fields, idOf, live, type E2bDeps } from './deps.ts';
import { listV1, listV2 } from './list.ts';
import type { E2bSandbox } from './views.ts';

/** `NewSandbox`, checked before anything slow (a first create builds the base template). */
function parseCreate(f: Fields): CreateRequest {
  const template = f.raw('templateID');
  if (typeof template !== 'string' || template === '')
    throw invalidArgument('templateID', 'is required (a template name or id, e.g. "base")');
  validateName('templateID', template);
  // Asked-for features kiln does not have are refused by name, never dropped in silence.
  if (f.has('mcp'))
    throw invalidArgument(
      'mcp',
      "the MCP gateway needs E2B's mcp-gateway template, which kiln does not have",
    );
  const iam = f.object('iam', 'an object {tokens}')?.raw('tokens');
  if (iam !== undefined && !(typeof iam === 'object' && iam !== null && Object.keys(iam).length === 0))
    throw invalidArgument(
      'iam',
      'workload identity tokens are resolved by network rule transforms, which kiln does not support',
    );
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
  // E2B's `onTimeout: {action: 'pause', keepMemory}`: false pauses keeping the filesystem only.
  const autoPauseMemory = f.bool('autoPauseMemory');
  if (autoPauseMemory === false && autoResume)
    throw invalidArgument(
      'autoPauseMemory',
      'false cannot go with autoResume: a filesystem-only pause is resumed by connect, not by traffic',
    );
  const timeoutS = f.int('timeout');
  const metadata = f.stringMap('metadata');
  const envVars = f.stringMap('envVars');
  const volumeMounts = parseVolumeMounts(f.raw('volumeMounts'));
  return {
    template,
    ...(timeoutS === undefined ? {} : { timeoutS }),
    ...(metadata === undefined ? {} : { metadata }),
    ...(envVars === undefined ? {} : { envVars }),
    autoPause,
    autoResume,
    ...(autoPauseMemory === undefined ? {} : { autoPauseMemory }),
    network,
    ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
  };
}

/** ResumedSandbox's default `timeout` (seconds), also a refresh's default `duration`. */
const RESUME_TIMEOUT_S = 15;
/** SandboxRefreshRequest's largest `duration` (seconds). */
const MAX_REFRESH_S = 3600;

async function create(d: E2bDeps, c: Ctx): Promise<E2bSandbox> {
  const req = parseCreate(await fields(c));
  const caller = callerOf(d, c);
  // E2B's `name:tag`: the template, while the tag names its current build.
  if (req.template.includes(':') && d.builds) req.template = d.builds.resolveTag(req.template, caller);
  await d.templates.ensure(req.template, c.opId);
  return d.views.sandbox(await d.svc.create(req, { opId: c.opId, caller }));
}

/**
 * Connecting to a paused sandbox resumes it (201, as in E2B); see daemon/connect.ts. Body
 * `{timeout, memory}`: `memory: false` (the SDK's `onResume: 'reboot'`) cold-boots a memory
 * pause on its disk; a no-op for a filesystem-only pause or a running sandbox.
 */
async function connect(d: E2bDeps, c: Ctx): Promise<E2bSandbox | null> {
  const id = idOf(c);
  const f = await fields(c);
  const timeoutS = f.int('timeout');
  const memory = f.bool('memory');
  live(d.svc, id, callerOf(d, c));
  const r = await d.connector.connect(id, { timeoutS, memory }, { opId: c.opId });
  if (!r.resumed) return d.views.sandbox(r.sandbox);
  sendJson(c.res, 201, d.views.sandbox(r.sandbox));
  return null;
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

/** Body `{memory}`: false keeps the filesystem only (the resume reboots the guest). */
async function pause(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const memory = (await fields(c)).bool('memory');
  const caller = callerOf(d, c);
  const s = live(d.svc, id, caller);
  if (s.state === 'paused' || s.state === 'pausing')
    throw new KilnError('invalid_state', `sandbox ${id} is already paused`);
  await d.svc.pause(id, { opId: c.opId, caller }, memory === undefined ? {} : { memory });
  return null;
}

/**
 * `POST /sandboxes/:id/resume` (deprecated; `ResumedSandbox`): resumes a paused sandbox for
 * `timeout` seconds (15 by default, as in the spec), 201 with the `Sandbox`; a running one is 409.
 * `memory: false` cold-boots it on its pause's disk (as connect's). `autoPause` is deprecated
 * in the spec and ignored: kiln keeps what create set.
 */
async function resume(d: E2bDeps, c: Ctx): Promise<E2bSandbox> {
  const id = idOf(c);
  const f = await fields(c);
  const timeoutS = f.int('timeout') ?? RESUME_TIMEOUT_S;
  const memory = f.bool('memory');
  const s = live(d.svc, id, callerOf(d, c));
  if (s.state === 'running' || s.state === 'resuming')
    throw new KilnError('invalid_state', `sandbox ${id} is already running`);
  return d.views.sandbox(await d.svc.resume(id, { timeoutS, memory }, { opId: c.opId }));
}

/**
 * `POST /sandboxes/:id/refreshes` (`SandboxRefreshRequest`): keeps the sandbox alive for at
 * least `duration` more seconds (0..3600, default 15); it never shortens its time to live.
 */
async function refresh(d: E2bDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const duration = (await fields(c)).int('duration') ?? RESUME_TIMEOUT_S;
  if (duration < 0 || duration > MAX_REFRESH_S)
    throw invalidArgument('duration', `must be 0 to ${MAX_REFRESH_S} seconds, got ${duration}`);
  const s = live(d.svc, id, callerOf(d, c));
  if (Date.parse(s.endAt) < Date.now() + duration * 1000) d.svc.setTimeout(id, duration);
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
  { method: 'POST', path: '/sandboxes', status: 201, handler: (c) => create(d, c) },
  { method: 'POST', path: '/v2/sandboxes/:id/connect', handler: (c) => connect(d, c) },
  { method: 'POST', path: '/sandboxes/:id/connect', handler: (c) => connect(d, c) },
  { method: 'GET', path: '/v2/sandboxes', handler: (c) => Promise.resolve(listV2(d, c)) },
  { method: 'GET', path: '/sandboxes', handler: (c) => Promise.resolve(listV1(d, c)) },
  {
    method: 'GET',
    path: '/sandboxes/:id',
    handler: (c) => Promise.resolve(d.views.detail(live(d.svc, idOf(c), callerOf(d, c)))),
  },
  { method: 'DELETE', path: '/sandboxes/:id', status: 204, handler: (c) => kill(d, c) },
  { method: 'POST', path: '/sandboxes/:id/timeout', status: 204, handler: (c) => setTimeout(d, c) },
  { method: 'POST', path: '/sandboxes/:id/refreshes', status: 204, handler: (c) => refresh(d, c) },
  { method: 'POST', path: '/sandboxes/:id/pause', status: 204, handler: (c) => pause(d, c) },
  { method: 'POST', path: '/sandboxes/:id/resume', status: 201, handler: (c) => resume(d, c) },
  { method: 'POST', path: '/sandboxes/:id/fork', status: 201, handler: (c) => fork(d, c) },
  { method: 'PUT', path: '/sandboxes/:id/network', status: 204, handler: (c) => updateNetwork(d, c) },
];
