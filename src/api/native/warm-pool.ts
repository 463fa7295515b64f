/** /v1/warm-pool and /v1/templates/{id}/warm-pool: the warm pool's sizes and contents (issue 15). */
import type { WarmPoolView } from '../../core/api-types.ts';
import { invalidArgument } from '../../core/errors.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';

async function set(d: NativeDeps, c: Ctx): Promise<WarmPoolView> {
  const f = await fields(c);
  const size = f.int('size');
  const reset = f.bool('reset') ?? false;
  if (reset === (size !== undefined))
    throw invalidArgument('size', 'give either a size (0..64) or reset: true (back to the default)');
  return d.svc.setWarmPoolSize(idOf(c), reset ? null : (size ?? 0));
}

export const warmPoolRoutes = (d: NativeDeps): Route[] => [
  { method: 'GET', path: '/v1/warm-pool', handler: () => Promise.resolve({ items: d.svc.warmPool() }) },
  {
    method: 'GET',
    path: '/v1/templates/:id/warm-pool',
    handler: (c) => Promise.resolve(d.svc.warmPoolOf(idOf(c))),
  },
  { method: 'PUT', path: '/v1/templates/:id/warm-pool', handler: (c) => set(d, c) },
];
