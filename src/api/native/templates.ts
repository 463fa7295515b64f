/** /v1/templates: list and build. */
import type { TemplateView } from '../../core/api-types.ts';
import { DEFAULT_MEMORY_MIB, DEFAULT_TEMPLATE, DEFAULT_VCPUS } from '../../core/defaults.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, type NativeDeps } from './deps.ts';
import { templateView } from './views.ts';

async function build(d: NativeDeps, c: Ctx): Promise<TemplateView> {
  const f = await fields(c);
  // Checked before the build: it starts by checking the image cache, which takes seconds.
  const name = validateName('name', f.string('name') ?? DEFAULT_TEMPLATE);
  const memoryMiB = validateMemoryMiB(f.int('memoryMiB') ?? DEFAULT_MEMORY_MIB);
  const vcpus = validateVcpus(f.int('vcpus') ?? DEFAULT_VCPUS);
  const t = await d.buildTemplate(name, { memoryMiB, vcpus }, c.opId);
  return templateView(t, d.svc.templateReady(t));
}

const list = (d: NativeDeps): { items: TemplateView[] } => ({
  items: d.svc.templates().map((t) => templateView(t, d.svc.templateReady(t))),
});

export const templateRoutes = (d: NativeDeps): Route[] => [
  { method: 'GET', path: '/v1/templates', handler: () => Promise.resolve(list(d)) },
  { method: 'POST', path: '/v1/templates', status: 201, handler: (c) => build(d, c) },
];
