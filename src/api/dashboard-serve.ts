/**
 * The dashboard's listener: its own TCP port on 127.0.0.1 (default 7482, $KILN_DASHBOARD_PORT;
 * 0 = any; a taken default falls back to a free port), so its cookie-based sessions never meet
 * the E2B API's key-based requests on one origin. The URL is recorded in `<state>/dashboard.json`.
 */
import { existsSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../core/fs-atomic.ts';
import type { UndoStack } from '../core/undo.ts';
import type { ApiKeyService } from '../daemon/api-keys.ts';
import { GuestFiles } from '../daemon/dashboard/guest-files.ts';
import { HostUsageReader } from '../daemon/dashboard/host-usage.ts';
import { ImageCatalog } from '../daemon/dashboard/image-catalog.ts';
import { TerminalService } from '../daemon/dashboard/terminals.ts';
import type { SandboxService } from '../daemon/sandbox-service.ts';
import type { TemplateBuildService } from '../daemon/templates/build-service.ts';
import { createDashboard } from './dashboard/server.ts';
import { SessionStore } from './dashboard/session.ts';
import { createListener, type ListenerLimits } from './listener.ts';
import { closeServer, listenTcp } from './net.ts';

export const DEFAULT_DASHBOARD_PORT = 7482;

/**
 * Where the set-up (scripts/env.sh `kiln_dashboard_build`) puts the built front end: dist/dashboard
 * in the checkout (gitignored), rebuilt when the front end's sources or the lockfile change.
 */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../dist/dashboard', import.meta.url));

/**
 * A browser holds a handful of connections (two long-lived streams per tab); uploads and
 * downloads are streams, so no deadline on a whole request.
 */
const DASHBOARD_LIMITS: ListenerLimits = {
  maxConnections: 256,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 0,
  keepAliveTimeoutMs: 5_000,
  maxRequestsPerSocket: 1000,
};

export interface DashboardServeDeps {
  svc: SandboxService;
  keys: ApiKeyService;
  builds: TemplateBuildService | undefined;
  version: string;
  stateDir: string;
  cacheDir: string;
  sandboxDomain: () => string;
}

export interface ServedDashboard {
  server: Server;
  url: string;
  /** A one-time sign-in link (root's: sees everything), good for two minutes. */
  link(): { url: string; expiresAt: string };
}

export async function serveDashboard(
  o: { port?: number | undefined; webDir?: string | undefined },
  log: Logger,
  deps: DashboardServeDeps,
  undo: UndoStack,
): Promise<ServedDashboard> {
  const dlog = log.child({ api: 'dashboard' });
  const webDir = o.webDir ?? DEFAULT_WEB_DIR;
  const built = existsSync(join(webDir, 'index.html'));
  if (!built) dlog.warn({ webDir }, 'the dashboard front end is not built; its pages answer 404 until it is');
  const agent = (id: string): ReturnType<SandboxService['agent']> => deps.svc.agent(id);
  const sessions = new SessionStore();
  const dash = createDashboard(
    {
      svc: deps.svc,
      keys: deps.keys,
      sessions,
      builds: deps.builds,
      terminals: new TerminalService({ agent, log: dlog }),
      files: new GuestFiles(agent),
      host: new HostUsageReader(deps),
      images: new ImageCatalog(deps),
      version: deps.version,
      sandboxDomain: deps.sandboxDomain,
      webDir: built ? webDir : undefined,
    },
    dlog,
  );
  const server = createListener(
    (req, res) => {
      dash.handle(req, res);
    },
    {
      name: 'dashboard',
      limits: DASHBOARD_LIMITS,
      log,
      errorBody: (k, opId) => ({ ...k.toJSON(), opId }),
    },
  );
  undo.push('close the dashboard', async () => {
    dash.close();
    await closeServer(server);
  });
  const port = await listenTcp(server, o.port, 'KILN_DASHBOARD_PORT', DEFAULT_DASHBOARD_PORT, log);
  const url = `http://127.0.0.1:${port}/`;
  const file = join(deps.stateDir, 'dashboard.json');
  undo.push('remove dashboard.json', () => unlink(file).catch(() => undefined));
  await writeFileAtomic(file, JSON.stringify({ url }) + '\n');
  dlog.info({ url }, 'dashboard listening');
  return {
    server,
    url,
    link() {
      const l = sessions.mintLink(undefined, 'sign-in link');
      return { url: `${url}login/link?token=${l.token}`, expiresAt: new Date(l.expiresAt).toISOString() };
    },
  };
}
