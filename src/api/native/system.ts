/** /v1/health, /v1/api-keys and /v1/e2b/env. */
import type { ApiKeyView, CreatedApiKeyView, DashboardView } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';
import { DEFAULT_API_KEY_NAME } from '../../core/defaults.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';
import { apiKeyView } from './views.ts';

async function createKey(d: NativeDeps, c: Ctx): Promise<CreatedApiKeyView> {
  const f = await fields(c);
  const name = f.string('name') ?? DEFAULT_API_KEY_NAME;
  const { record, key } = d.keys.create(name, { admin: f.bool('admin') ?? false });
  return { ...apiKeyView(record), key };
}

const listKeys = (d: NativeDeps): { items: ApiKeyView[] } => ({ items: d.keys.list().map(apiKeyView) });

function dashboard(d: NativeDeps, link: boolean): Promise<DashboardView> {
  if (!d.dashboard) throw new KilnError('not_found', 'this kilnd serves no dashboard');
  if (!link) return Promise.resolve({ url: d.dashboard.url, expiresAt: null });
  return Promise.resolve(d.dashboard.link());
}

export const systemRoutes = (d: NativeDeps): Route[] => [
  { method: 'GET', path: '/v1/dashboard', handler: () => dashboard(d, false) },
  { method: 'POST', path: '/v1/dashboard/link', handler: () => dashboard(d, true) },
  { method: 'GET', path: '/v1/health', handler: () => Promise.resolve({ ok: true, version: d.version }) },
  { method: 'POST', path: '/v1/e2b/env', handler: () => d.e2bEnv() },
  { method: 'POST', path: '/v1/api-keys', status: 201, handler: (c) => createKey(d, c) },
  { method: 'GET', path: '/v1/api-keys', handler: () => Promise.resolve(listKeys(d)) },
  {
    method: 'DELETE',
    path: '/v1/api-keys/:id',
    status: 204,
    handler: (c) => {
      d.keys.delete(idOf(c));
      return Promise.resolve(null);
    },
  },
];
