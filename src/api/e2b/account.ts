/**
 * E2B's account routes on one host: `GET /health`, `GET /teams` (one implicit team, "kiln"),
 * the team's API keys (kiln's keys; an admin key manages them) and `GET /templates/aliases/:alias`
 * (kiln's own templates by name, so `Template.exists('base')` is true).
 */
import { DEFAULT_TEMPLATE } from '../../core/defaults.ts';
import type { ApiKeyRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { validateName } from '../../core/validate.ts';
import { seesTemplate } from '../../daemon/scope.ts';
import type { Ctx, Route } from '../http.ts';
import { required } from '../parse.ts';
import { callerOf, fields, type E2bDeps } from './deps.ts';

/** The one team a kiln host has. */
export const KILN_TEAM = 'kiln';
/** kiln's keys are `e2b_` and 40 hex digits (daemon/api-keys.ts). */
const KEY_PREFIX = 'e2b_';
const KEY_LENGTH = 40;

/** `TeamAPIKey` (kiln records no creator). */
const keyView = (k: ApiKeyRecord) => ({
  id: k.id,
  name: k.name,
  mask: {
    prefix: KEY_PREFIX,
    valueLength: KEY_LENGTH,
    maskedValuePrefix: k.prefix.slice(KEY_PREFIX.length),
    maskedValueSuffix: '',
  },
  createdAt: k.createdAt,
  createdBy: null,
  lastUsed: k.lastUsedAt,
});

/** Managing keys needs an admin key (one made by `kiln e2b env` or `kiln api-key create --admin`). */
function admin(d: E2bDeps, c: Ctx): void {
  if (!callerOf(d, c).admin)
    throw new KilnError(
      'permission_denied',
      'managing API keys needs an admin API key (kiln api-key create --admin)',
    );
}

async function createKey(d: E2bDeps, c: Ctx) {
  admin(d, c);
  const name = required('name', (await fields(c)).string('name'), ' (the new key name)');
  const made = d.keys.create(name);
  return { ...keyView(made.record), key: made.key };
}

function deleteKey(d: E2bDeps, c: Ctx): Promise<null> {
  admin(d, c);
  const id = c.params['apiKeyID'] ?? '';
  validateName('apiKeyID', id);
  if (!d.keys.list().some((k) => k.id === id))
    throw new KilnError('not_found', `API key "${id}" does not exist`);
  d.keys.delete(id);
  return Promise.resolve(null);
}

/**
 * `TemplateAliasResponse` for a template name the caller sees: kiln's own templates are
 * `public` (every key may use them), and the default template exists before its first build
 * (a create builds it). Another key's template is not found, exactly like a missing one.
 */
function alias(d: E2bDeps, c: Ctx): { templateID: string; public: boolean } {
  const name = c.params['alias'] ?? '';
  const caller = callerOf(d, c);
  const t = d.svc.templates().find((x) => x.name === name && seesTemplate(caller, x));
  if (t) return { templateID: t.id, public: t.ownerKeyId === null };
  if (name === DEFAULT_TEMPLATE) return { templateID: DEFAULT_TEMPLATE, public: true };
  throw new KilnError('not_found', `template "${name}" does not exist`);
}

export const accountRoutes = (d: E2bDeps): Route[] => [
  { method: 'GET', path: '/health', status: 204, handler: () => Promise.resolve(null) },
  {
    method: 'GET',
    path: '/teams',
    handler: (c) => {
      const k = c.req.headers['x-api-key'];
      return Promise.resolve([
        { teamID: KILN_TEAM, name: KILN_TEAM, apiKey: typeof k === 'string' ? k : '', isDefault: true },
      ]);
    },
  },
  {
    method: 'GET',
    path: '/api-keys',
    handler: (c) => {
      admin(d, c);
      return Promise.resolve(d.keys.list().map(keyView));
    },
  },
  { method: 'POST', path: '/api-keys', status: 201, handler: (c) => createKey(d, c) },
  { method: 'DELETE', path: '/api-keys/:apiKeyID', status: 204, handler: (c) => deleteKey(d, c) },
  { method: 'GET', path: '/templates/aliases/:alias', handler: (c) => Promise.resolve(alias(d, c)) },
];
