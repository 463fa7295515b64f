/** What the dashboard's handlers are given, and the checks they share. */
import type { IncomingMessage } from 'node:http';
import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import type { ApiKeyService } from '../../daemon/api-keys.ts';
import type { GuestFiles } from '../../daemon/dashboard/guest-files.ts';
import type { HostUsageReader } from '../../daemon/dashboard/host-usage.ts';
import type { ImageCatalog } from '../../daemon/dashboard/image-catalog.ts';
import type { TerminalService } from '../../daemon/dashboard/terminals.ts';
import type { SandboxService } from '../../daemon/sandbox-service.ts';
import { sees, type Caller } from '../../daemon/scope.ts';
import type { TemplateBuildService } from '../../daemon/templates/build-service.ts';
import type { Ctx } from '../http.ts';
import { Fields } from '../parse.ts';
import type { Session, SessionStore } from './session.ts';

export interface DashboardDeps {
  svc: SandboxService;
  keys: ApiKeyService;
  sessions: SessionStore;
  builds: TemplateBuildService | undefined;
  terminals: TerminalService;
  files: GuestFiles;
  host: HostUsageReader;
  images: ImageCatalog;
  version: string;
  /** The `domain` published ports live under (`{port}-{id}.<domain>`). */
  sandboxDomain: () => string;
  /** The built front end (index.html, assets/), or undefined when it was not built. */
  webDir: string | undefined;
}

/** The session the guard found for a request (set before any route runs). */
const sessionOfReq = new WeakMap<IncomingMessage, Session>();

export function bindSession(req: IncomingMessage, s: Session): void {
  sessionOfReq.set(req, s);
}

export function sessionOf(c: Ctx): Session {
  const s = sessionOfReq.get(c.req);
  if (!s) throw new KilnError('unauthenticated', 'not signed in to the dashboard');
  return s;
}

export const callerOf = (c: Ctx): Caller | undefined => sessionOf(c).caller;

export const opCtx = (c: Ctx): { opId: string; caller: Caller | undefined } => ({
  opId: c.opId,
  caller: callerOf(c),
});

/** The request's JSON body; null is a wrong type (the dashboard sends none). */
export const fields = async (c: Ctx): Promise<Fields> => new Fields(await c.body(), 'refused');

export const idOf = (c: Ctx): string => c.params['id'] ?? '';

/** A sandbox the session sees (live or ended), else `not_found` (another key's answers the same). */
export function visibleSandbox(d: DashboardDeps, c: Ctx, id = idOf(c)): SandboxRecord {
  const s = d.svc.get(id);
  if (!sees(callerOf(c), s.ownerKeyId))
    throw new KilnError('not_found', `sandbox "${id}" does not exist`, { details: { sandboxId: id } });
  return s;
}

/** Refuses a plain key's session for what only admins (or the root socket's link) may do. */
export function needAdmin(c: Ctx, what: string): void {
  const caller = callerOf(c);
  if (caller && !caller.admin) throw new KilnError('forbidden', `${what} needs an admin key's session`);
}
