/**
 * POST /v1/sandboxes/:id/workspace (a push: the tar stream as the body, options in the query) and
 * POST /v1/sandboxes/:id/workspace/export (the answer: one JSON line, the head, then the binary
 * patch to the end of the body). Both stream; neither holds a repository in memory.
 */
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { WorkspaceMode, WorkspaceView } from '../../core/api-types.ts';
import { invalidArgument } from '../../core/errors.ts';
import type { Ctx, Route } from '../http.ts';
import { idOf, type NativeDeps } from './deps.ts';

const opt = (c: Ctx, name: string): string | undefined => c.query.get(name) ?? undefined;

function flag(c: Ctx, name: string): boolean {
  const v = c.query.get(name);
  if (v === null || v === 'false') return false;
  if (v === 'true') return true;
  throw invalidArgument(name, `must be true or false, got "${v}"`);
}

/** An abort signal for the request: the client went away before the answer was complete. */
function abortOnClose(c: Ctx): AbortSignal {
  const ac = new AbortController();
  c.res.on('close', () => {
    if (!c.res.writableFinished) ac.abort();
  });
  return ac.signal;
}

async function push(d: NativeDeps, c: Ctx): Promise<WorkspaceView> {
  try {
    return await pushOnce(d, c);
  } catch (e) {
    // Refused before (or while) the body was read: let the client finish sending, then answer.
    // Answering first would close the connection under a client still writing, whose write
    // error (EPIPE) would then hide the answer.
    c.req.resume();
    await finished(c.req).catch(() => undefined); // ends, or the client went away
    throw e;
  }
}

async function pushOnce(d: NativeDeps, c: Ctx): Promise<WorkspaceView> {
  const head = opt(c, 'head');
  if (!head) throw invalidArgument('head', "is required (the host repository's HEAD commit)");
  return d.svc.pushWorkspace(
    idOf(c),
    c.req,
    {
      mode: (opt(c, 'mode') ?? 'full_copy') as WorkspaceMode,
      head,
      name: opt(c, 'name'),
      guestPath: opt(c, 'guestPath'),
      branch: opt(c, 'branch'),
      from: opt(c, 'from'),
      readOnly: flag(c, 'readOnly'),
      signal: abortOnClose(c),
    },
    { opId: c.opId },
  );
}

async function exportPatch(d: NativeDeps, c: Ctx): Promise<null> {
  const signal = abortOnClose(c);
  await d.svc.exportWorkspace(
    idOf(c),
    { guestPath: opt(c, 'guestPath'), base: opt(c, 'base'), signal },
    {
      head: (h) => {
        c.res.writeHead(200, { 'content-type': 'application/x-kiln-workspace-export' });
        c.res.write(JSON.stringify(h) + '\n');
      },
      patch: async (b) => {
        if (!c.res.write(b)) await once(c.res, 'drain', { signal });
      },
    },
    { opId: c.opId },
  );
  c.res.end();
  return null;
}

export const workspaceRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/sandboxes/:id/workspace', handler: (c) => push(d, c) },
  { method: 'POST', path: '/v1/sandboxes/:id/workspace/export', handler: (c) => exportPatch(d, c) },
];
