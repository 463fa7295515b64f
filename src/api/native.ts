/**
 * kiln's native API (documented in docs/openapi.json; tests keep the two in step): one handler
 * file per resource under ./native/, parsed with ./parse.ts, bodies typed by core/api-types.ts.
 */
import type { E2bEnvView } from '../core/api-types.ts';
import type { ApiKeyService } from '../daemon/api-keys.ts';
import { TemplateEnsurer, type TemplateBuilder } from '../daemon/ensure-template.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import type { Route } from './http.ts';
import type { NativeDeps } from './native/deps.ts';
import { execRoutes } from './native/exec.ts';
import { sandboxRoutes } from './native/sandboxes.ts';
import { snapshotRoutes } from './native/snapshots.ts';
import { systemRoutes } from './native/system.ts';
import { templateRoutes } from './native/templates.ts';
import { templateBuildRoutes } from './native/template-builds.ts';
import { warmPoolRoutes } from './native/warm-pool.ts';
import type { TemplateBuildService } from '../daemon/templates/build-service.ts';
import { volumeRoutes } from './native/volumes.ts';
import { workspaceRoutes } from './native/workspace.ts';

export type { TemplateBuilder } from '../daemon/ensure-template.ts';
export { sandboxView, snapshotView } from './native/views.ts';

export const API_VERSION = 'v1';

/** What `kiln e2b env` prints: where the E2B API and the envd proxy listen, and a key for them. */
export type E2bEnv = E2bEnvView;

export interface NativeApiDeps {
  svc: SandboxService;
  buildTemplate: TemplateBuilder;
  version: string;
  keys: ApiKeyService;
  e2bEnv: () => Promise<E2bEnv>;
  /** The domain published ports are under (`{port}-{id}.<domain>`; kilnd: the E2B API's). */
  sandboxDomain?: string;
  /** Builds the default template on first use; pass the E2B API's too so they share one build. */
  templates?: TemplateEnsurer;
  /** Template builds (kilnd's one service, shared with the E2B API). */
  builds?: TemplateBuildService;
  /** The web dashboard (kilnd's): `kiln dashboard` asks for its URL and sign-in links. */
  dashboard?: NativeDeps['dashboard'];
}

export function nativeRoutes(o: NativeApiDeps): Route[] {
  const d = { ...o, templates: o.templates ?? new TemplateEnsurer(o.svc, o.buildTemplate) };
  return [
    ...systemRoutes(d),
    ...templateRoutes(d),
    ...templateBuildRoutes(d),
    ...warmPoolRoutes(d),
    ...sandboxRoutes(d),
    ...execRoutes(d),
    ...snapshotRoutes(d),
    ...volumeRoutes(d),
    ...workspaceRoutes(d),
  ];
}
