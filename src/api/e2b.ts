/**
 * The E2B-compatible control plane: the routes the official `e2b` SDK calls (shapes from E2B's
 * public OpenAPI spec, as embedded in the SDK's typings), over the SandboxService. Every request
 * needs an `X-API-KEY` that kiln issued; errors are E2B's `{code: <http status>, message}`, the
 * status chosen by the catalog code. One handler file per resource under ./e2b/.
 */
import type { ApiKeyService } from '../daemon/api-keys.ts';
import { SandboxConnector } from '../daemon/connect.ts';
import { TemplateEnsurer, type TemplateBuilder } from '../daemon/ensure-template.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import type { TemplateBuildService } from '../daemon/templates/build-service.ts';
import { accountRoutes } from './e2b/account.ts';
import { logRoutes } from './e2b/logs.ts';
import { metricsRoutes } from './e2b/metrics.ts';
import { refusedRoutes } from './e2b/route-table.ts';
import { sandboxRoutes } from './e2b/sandboxes.ts';
import { snapshotRoutes } from './e2b/snapshots.ts';
import { templateRoutes } from './e2b/templates.ts';
import { volumesRoutes } from './e2b/volumes.ts';
import { e2bViews } from './e2b/views.ts';
import type { Route } from './http.ts';

export { e2bErrorBody, e2bRouterOpts } from './e2b/errors.ts';
export { E2B_REFUSED, E2B_SERVED } from './e2b/route-table.ts';

export type E2bApiDeps = {
  svc: SandboxService;
  keys: ApiKeyService;
  /** Connect and autoResume policy; kilnd passes one on the service's clock. */
  connector?: SandboxConnector;
  /** The `domain` create/connect/get answer (published ports: `{port}-{id}.<domain>`); default none. */
  sandboxDomain?: () => string | null;
  /** Template builds (the SDK's Template.build); kilnd passes its one service. */
  builds?: TemplateBuildService;
} & (
  | {
      /** Builds the default template on first use; kilnd passes the native API's (one build at a time). */
      templates: TemplateEnsurer;
    }
  | { buildTemplate: TemplateBuilder }
);

export function e2bRoutes(o: E2bApiDeps): Route[] {
  const d = {
    svc: o.svc,
    keys: o.keys,
    templates: 'templates' in o ? o.templates : new TemplateEnsurer(o.svc, o.buildTemplate),
    connector: o.connector ?? new SandboxConnector(o.svc),
    views: e2bViews(o.svc, o.sandboxDomain ?? (() => null)),
    builds: o.builds,
  };
  // Metrics first: `GET /sandboxes/metrics` must not be taken for `GET /sandboxes/:id`.
  return [
    ...metricsRoutes(d),
    ...sandboxRoutes(d),
    ...logRoutes(d),
    // Account (`GET /templates/aliases/:alias`) before templates, templates (`DELETE
    // /templates/tags`) before snapshots (`DELETE /templates/:id`): the first match wins.
    ...accountRoutes(d),
    ...templateRoutes(d),
    ...snapshotRoutes(d),
    ...volumesRoutes(d),
    ...refusedRoutes(),
  ];
}
