/**
 * The routes of E2B's OpenAPI spec kiln's E2B API claims: those it serves, and those it answers
 * with a clear refusal because they are E2B cloud operations (nodes, admin, access tokens, ...)
 * that mean nothing on one host. The README prints both lists; e2b.test.ts checks them against
 * the routes kiln actually registers.
 */
import { KilnError } from '../../core/errors.ts';
import type { Route } from '../http.ts';

/** Served: `METHOD path`, the path in kiln's router form (`:param`). */
export const E2B_SERVED: readonly string[] = [
  'GET /health',
  'GET /teams',
  'GET /api-keys',
  'POST /api-keys',
  'DELETE /api-keys/:apiKeyID',
  'POST /sandboxes',
  'POST /v2/sandboxes',
  'GET /sandboxes',
  'GET /v2/sandboxes',
  'GET /sandboxes/metrics',
  'GET /sandboxes/:id',
  'DELETE /sandboxes/:id',
  'GET /sandboxes/:id/logs',
  'GET /v2/sandboxes/:id/logs',
  'GET /sandboxes/:id/metrics',
  'POST /sandboxes/:id/connect',
  'POST /v2/sandboxes/:id/connect',
  'POST /sandboxes/:id/timeout',
  'POST /sandboxes/:id/refreshes',
  'POST /sandboxes/:id/pause',
  'POST /sandboxes/:id/resume',
  'POST /sandboxes/:id/fork',
  'PUT /sandboxes/:id/network',
  'POST /sandboxes/:id/snapshots',
  'GET /snapshots',
  'DELETE /templates/:id',
  'GET /templates/aliases/:alias',
  'POST /v3/templates',
  'POST /v2/templates',
  'GET /templates',
  'GET /v2/templates',
  'GET /templates/:id',
  'PATCH /templates/:id',
  'PATCH /v2/templates/:id',
  'GET /templates/:templateID/files/:hash',
  'PUT /template-files/:token',
  'POST /v2/templates/:templateID/builds/:buildID',
  'GET /templates/:templateID/builds/:buildID/status',
  'GET /templates/:templateID/builds/:buildID/logs',
  'POST /templates/tags',
  'DELETE /templates/tags',
  'GET /templates/:templateID/tags',
  'POST /volumes',
  'GET /volumes',
  'GET /volumes/:id',
  'DELETE /volumes/:id',
  'GET /volumecontent/:id/dir',
  'POST /volumecontent/:id/dir',
  'GET /volumecontent/:id/path',
  'PATCH /volumecontent/:id/path',
  'DELETE /volumecontent/:id/path',
  'GET /volumecontent/:id/file',
  'PUT /volumecontent/:id/file',
];

const SECRETS =
  'E2B secret markers are resolved at sandbox egress by network rule transforms, which kiln does not support';

/** Refused with a clear error: `METHOD path` and why it has no meaning on a single kiln host. */
export const E2B_REFUSED: readonly (readonly [string, string])[] = [
  ['GET /nodes', 'E2B cloud cluster nodes; a kiln host is one node'],
  ['GET /nodes/:nodeID', 'E2B cloud cluster nodes; a kiln host is one node'],
  ['POST /nodes/:nodeID', 'E2B cloud cluster nodes; a kiln host is one node'],
  ['POST /admin/teams/:teamID/sandboxes/kill', 'E2B cloud administration; use `kiln` on the host'],
  ['GET /admin/sandboxes/running-counts', 'E2B cloud administration; use `kiln` on the host'],
  ['POST /admin/teams/:teamID/builds/cancel', 'E2B cloud administration; use `kiln` on the host'],
  ['POST /admin/teams/:teamID/api-keys', 'E2B cloud administration; use POST /api-keys'],
  ['DELETE /admin/teams/:teamID/api-keys/:apiKeyID', 'E2B cloud administration; use DELETE /api-keys/{id}'],
  ['POST /access-tokens', 'E2B cloud user access tokens; kiln authenticates with API keys only'],
  [
    'DELETE /access-tokens/:accessTokenID',
    'E2B cloud user access tokens; kiln authenticates with API keys only',
  ],
  ['PATCH /api-keys/:apiKeyID', 'kiln keys cannot be renamed; create a new one and delete the old'],
  ['GET /teams/:teamID/metrics', 'E2B cloud team usage metrics; see `kiln sandbox stats` on the host'],
  ['GET /teams/:teamID/metrics/max', 'E2B cloud team usage metrics; see `kiln sandbox stats` on the host'],
  ['GET /secrets', SECRETS],
  ['POST /secrets', SECRETS],
  ['GET /secrets/:secretID', SECRETS],
  ['POST /secrets/:secretID', SECRETS],
  ['DELETE /secrets/:secretID', SECRETS],
];

/** The refused routes as routes: each answers 404 naming itself and why (never a bare "no route"). */
export const refusedRoutes = (): Route[] =>
  E2B_REFUSED.map(([r, why]) => {
    const [method = '', path = ''] = r.split(' ');
    return {
      method,
      path,
      handler: () =>
        Promise.reject(
          new KilnError('not_found', `${method} ${path} is not available on a single-host kiln: ${why}`),
        ),
    };
  });
