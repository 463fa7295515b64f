/** What the E2B API's handlers are given, and the checks they share. */
import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import type { ApiKeyService } from '../../daemon/api-keys.ts';
import type { SandboxConnector } from '../../daemon/connect.ts';
import type { TemplateEnsurer } from '../../daemon/ensure-template.ts';
import type { SandboxService } from '../../daemon/sandbox-service.ts';
import type { TemplateBuildService } from '../../daemon/templates/build-service.ts';
import { sees, type Caller } from '../../daemon/scope.ts';
import type { Ctx } from '../http.ts';
import { Fields } from '../parse.ts';
import type { E2bViews } from './views.ts';

export interface E2bDeps {
  svc: SandboxService;
  keys: ApiKeyService;
  templates: TemplateEnsurer;
  connector: SandboxConnector;
  views: E2bViews;
  /** Template builds (issue 14); absent, the template build routes answer invalid_state. */
  builds: TemplateBuildService | undefined;
}

/** The longest page E2B's list endpoints answer. */
export const MAX_LIST = 100;

/** The request's JSON body under E2B's null rule: its SDK sends null for what was not given. */
export const fields = async (c: Ctx): Promise<Fields> => new Fields(await c.body(), 'absent');

export const idOf = (c: Ctx): string => c.params['id'] ?? '';

/** The key of the request (the router checked it already): whose objects it sees and makes. */
export function callerOf(d: E2bDeps, c: Ctx): Caller {
  const k = c.req.headers['x-api-key'];
  const rec = d.keys.verify(typeof k === 'string' ? k : undefined);
  return { keyId: rec.id, admin: rec.admin };
}

/** What the store answers for a sandbox that does not exist (another key's answers the same). */
export const noSandbox = (id: string): KilnError =>
  new KilnError('not_found', `sandbox "${id}" does not exist`, { details: { sandboxId: id } });
export const noSnapshot = (id: string): KilnError =>
  new KilnError('not_found', `snapshot "${id}" does not exist`, { details: { snapshotId: id } });

/**
 * A live sandbox the caller may see, or `not_found`: another key's sandbox answers exactly as
 * one that does not exist (no existence oracle), and E2B forgets sandboxes once they end, so a
 * dead one answers 404 too.
 */
export function live(svc: SandboxService, id: string, caller: Caller): SandboxRecord {
  const s = svc.get(id);
  if (!sees(caller, s.ownerKeyId)) throw noSandbox(id);
  if (s.state === 'dead' || s.state === 'killing')
    throw new KilnError(
      'not_found',
      `sandbox "${id}" does not exist (it ended: ${s.endReason ?? 'killed'})`,
      {
        details: { sandboxId: id },
      },
    );
  return s;
}
