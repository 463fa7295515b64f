/** What the native API's handlers are given, and the helpers they share. */
import type { E2bEnvView } from '../../core/api-types.ts';
import type { ApiKeyService } from '../../daemon/api-keys.ts';
import type { TemplateBuilder, TemplateEnsurer } from '../../daemon/ensure-template.ts';
import type { SandboxService } from '../../daemon/sandbox-service.ts';
import type { TemplateBuildService } from '../../daemon/templates/build-service.ts';
import type { Ctx } from '../http.ts';
import { Fields } from '../parse.ts';

export interface NativeDeps {
  svc: SandboxService;
  buildTemplate: TemplateBuilder;
  /** Builds the default template on first use (shared with the E2B API: one build at a time). */
  templates: TemplateEnsurer;
  version: string;
  keys: ApiKeyService;
  e2bEnv: () => Promise<E2bEnvView>;
  /** The domain published ports are under (`{port}-{id}.<domain>`); unset: none is served. */
  sandboxDomain?: string;
  /** Template builds from step lists (issue 14); absent, those routes answer invalid_state. */
  builds?: TemplateBuildService | undefined;
  /** The web dashboard, when kilnd serves it: its URL and one-time sign-in links. */
  dashboard?: { url: string; link(): { url: string; expiresAt: string } };
}

/** The request's JSON body under the native API's null rule (docs/openapi.json: nothing is nullable). */
export const fields = async (c: Ctx): Promise<Fields> => new Fields(await c.body(), 'refused');

/** The `:id` of the route. */
export const idOf = (c: Ctx): string => c.params['id'] ?? '';

/** A `?limit=&cursor=` page request (the store checks the limit). */
export function pageOf(q: URLSearchParams): { limit?: number; cursor: string | undefined } {
  const limit = q.get('limit');
  return { ...(limit ? { limit: Number(limit) } : {}), cursor: q.get('cursor') ?? undefined };
}
