/** /v1/sandboxes: create, list, get, kill, timeout, pause, resume, fork, stats, logs, network, ports. */
import { BUILDER_METADATA_KEY } from '../../core/defaults.ts';
import type {
  EventView,
  ForkView,
  PageView,
  PortView,
  SandboxView,
  StatsView,
} from '../../core/api-types.ts';
import { DEFAULT_CREATE_FLAGS, DEFAULT_FORK_COUNT } from '../../core/defaults.ts';
import type { SandboxState } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { parseNetwork, parseNetworkUpdate } from '../../core/network-parse.ts';
import { validatePublishedPort } from '../../core/validate.ts';
import type { CreateRequest } from '../../daemon/sandbox-service.ts';
import type { Ctx, Route } from '../http.ts';
import { queryEnum, required, type Fields } from '../parse.ts';
import { parseVolumeMounts } from '../volumes.ts';
import { fields, idOf, pageOf, type NativeDeps } from './deps.ts';
import { sandboxView } from './views.ts';

const STATES: SandboxState[] = ['creating', 'running', 'pausing', 'paused', 'resuming', 'killing', 'dead'];

/** The create options shared by POST /v1/sandboxes and POST /v1/snapshots/:id/restore. */
export function createOpts(f: Fields): Omit<CreateRequest, 'template'> {
  const timeoutS = f.int('timeoutS');
  const memoryMiB = f.int('memoryMiB');
  const vcpus = f.int('vcpus');
  const metadata = f.stringMap('metadata');
  const envVars = f.stringMap('envVars');
  if (f.raw('volumeMounts') === null) throw invalidArgument('volumeMounts', 'must not be null');
  const volumeMounts = parseVolumeMounts(f.raw('volumeMounts'));
  return {
    ...(timeoutS === undefined ? {} : { timeoutS }),
    ...(metadata === undefined ? {} : { metadata }),
    ...(envVars === undefined ? {} : { envVars }),
    ...(memoryMiB === undefined ? {} : { memoryMiB }),
    ...(vcpus === undefined ? {} : { vcpus }),
    autoPause: f.bool('autoPause') ?? DEFAULT_CREATE_FLAGS.autoPause,
    autoResume: f.bool('autoResume') ?? DEFAULT_CREATE_FLAGS.autoResume,
    network: parseNetwork(f.raw('network'), f.bool('allowInternet'), { field: 'network', nulls: 'refused' }),
    ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
  };
}

async function create(d: NativeDeps, c: Ctx): Promise<SandboxView> {
  const f = await fields(c);
  const template = required('template', f.string('template'));
  const opts = createOpts(f);
  // The default template is built on first use (kiln run, kiln sandbox create, any client).
  await d.templates.ensure(template, c.opId);
  return sandboxView(await d.svc.create({ template, ...opts }, { opId: c.opId }));
}

function list(d: NativeDeps, c: Ctx): PageView<SandboxView> {
  const states = queryEnum(
    c.query,
    'state',
    (s) => (STATES.includes(s as SandboxState) ? [s as SandboxState] : undefined),
    'a sandbox state',
  );
  const metadata: Record<string, string> = {};
  for (const [k, v] of c.query) if (k.startsWith('metadata.')) metadata[k.slice('metadata.'.length)] = v;
  const page = d.svc.list(
    { ...(states.length ? { states } : {}), metadata, withoutMetadataKey: BUILDER_METADATA_KEY },
    pageOf(c.query),
  );
  return { items: page.items.map(sandboxView), next: page.next ?? null };
}

async function setTimeout(d: NativeDeps, c: Ctx): Promise<SandboxView> {
  const t = required('timeoutS', (await fields(c)).int('timeoutS'));
  return sandboxView(d.svc.setTimeout(idOf(c), t));
}

/** Body `{timeoutS, memory}`: `memory: false` cold-boots a memory pause on its disk. */
async function resume(d: NativeDeps, c: Ctx): Promise<SandboxView> {
  const f = await fields(c);
  const timeoutS = f.int('timeoutS');
  const memory = f.bool('memory');
  return sandboxView(await d.svc.resume(idOf(c), { timeoutS, memory }, { opId: c.opId }));
}

async function fork(d: NativeDeps, c: Ctx): Promise<ForkView> {
  const f = await fields(c);
  const count = f.int('count') ?? DEFAULT_FORK_COUNT;
  const t = f.int('timeoutS');
  const r = await d.svc.fork(
    idOf(c),
    { count, ...(t === undefined ? {} : { timeoutS: t }) },
    { opId: c.opId },
  );
  return {
    snapshotId: r.snapshot.id,
    results: r.results.map((x) =>
      'sandbox' in x
        ? { sandbox: sandboxView(x.sandbox) }
        : { error: { code: x.error.code, message: x.error.message } },
    ),
  };
}

/** PUT: replaces the egress rules of a running or paused sandbox (omitted fields are cleared). */
async function updateNetwork(d: NativeDeps, c: Ctx): Promise<SandboxView> {
  const egress = parseNetworkUpdate(await c.body(), 'allowInternet', { nulls: 'refused' });
  return sandboxView(await d.svc.updateNetwork(idOf(c), egress, { opId: c.opId }));
}

/** Where guest port `:port` of a live sandbox is reached from the host (published on first use). */
function port(d: NativeDeps, c: Ctx): PortView {
  const raw = c.params['port'] ?? '';
  const guestPort = validatePublishedPort('port', /^\d{1,5}$/.test(raw) ? Number(raw) : raw);
  const s = d.svc.get(idOf(c));
  if (s.state === 'dead' || s.state === 'killing')
    throw new KilnError('invalid_state', `sandbox ${s.id} is ${s.state}; it has no ports`, {
      details: { sandboxId: s.id, state: s.state },
    });
  if (d.sandboxDomain === undefined)
    throw new KilnError('invalid_state', 'this kilnd serves no envd proxy, so no published ports');
  const host = `${guestPort}-${s.id}.${d.sandboxDomain}`;
  return { sandboxId: s.id, port: guestPort, host, url: `http://${host}/` };
}

function logs(d: NativeDeps, c: Ctx): PageView<EventView> {
  const p = d.svc.logs(idOf(c), pageOf(c.query));
  return { items: p.items, next: p.next ?? null };
}

export const sandboxRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/sandboxes', status: 201, handler: (c) => create(d, c) },
  { method: 'GET', path: '/v1/sandboxes', handler: (c) => Promise.resolve(list(d, c)) },
  {
    method: 'GET',
    path: '/v1/sandboxes/:id',
    handler: (c) => Promise.resolve(sandboxView(d.svc.get(idOf(c)))),
  },
  {
    method: 'DELETE',
    path: '/v1/sandboxes/:id',
    status: 204,
    handler: async (c) => {
      await d.svc.kill(idOf(c), { opId: c.opId });
      return null;
    },
  },
  { method: 'POST', path: '/v1/sandboxes/:id/timeout', handler: (c) => setTimeout(d, c) },
  {
    method: 'POST',
    path: '/v1/sandboxes/:id/pause',
    handler: async (c) => {
      const memory = (await fields(c)).bool('memory');
      return sandboxView(
        await d.svc.pause(idOf(c), { opId: c.opId }, memory === undefined ? {} : { memory }),
      );
    },
  },
  { method: 'POST', path: '/v1/sandboxes/:id/resume', handler: (c) => resume(d, c) },
  { method: 'POST', path: '/v1/sandboxes/:id/fork', status: 201, handler: (c) => fork(d, c) },
  {
    method: 'GET',
    path: '/v1/sandboxes/:id/stats',
    handler: (c): Promise<StatsView> => d.svc.stats(idOf(c)),
  },
  { method: 'GET', path: '/v1/sandboxes/:id/ports/:port', handler: (c) => Promise.resolve(port(d, c)) },
  { method: 'GET', path: '/v1/sandboxes/:id/logs', handler: (c) => Promise.resolve(logs(d, c)) },
  { method: 'PUT', path: '/v1/sandboxes/:id/network', handler: (c) => updateNetwork(d, c) },
];
