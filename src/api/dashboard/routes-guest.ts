/**
 * Into a running sandbox from the dashboard: the file browser (list, download, upload) and
 * terminals (a PTY shell: its output as server-sent events, keystrokes and resizes as actions).
 * Both go through the daemon's guest access (daemon/dashboard/), which speaks to the guest agent.
 */
import { basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { DashEntry } from '../../core/dashboard-types.ts';
import { invalidArgument } from '../../core/errors.ts';
import type { Ctx, Route } from '../http.ts';
import { fields, sessionOf, visibleSandbox, type DashboardDeps } from './deps.ts';
import { openSse } from './sse.ts';

/** A guest path from the query: absolute, no NUL (the agent applies its own rules beyond). */
function pathQuery(c: Ctx): string {
  const p = c.query.get('path') ?? '';
  if (!p.startsWith('/') || p.includes('\0') || p.length > 4096)
    throw invalidArgument('path', 'must be an absolute guest path');
  return p;
}

async function listFiles(d: DashboardDeps, c: Ctx): Promise<DashEntry[]> {
  const s = visibleSandbox(d, c);
  return d.files.list(s.id, pathQuery(c));
}

async function download(d: DashboardDeps, c: Ctx): Promise<null> {
  const s = visibleSandbox(d, c);
  const path = pathQuery(c);
  const ac = new AbortController();
  c.res.on('close', () => {
    ac.abort();
  });
  const src = await d.files.download(s.id, path, ac.signal);
  const name = basename(path).replace(/[^\w.+-]/g, '_') || 'download';
  c.res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename="${name}"`,
    ...(src.headers['content-length'] ? { 'content-length': src.headers['content-length'] } : {}),
  });
  await pipeline(src, c.res).catch(() => undefined);
  return null;
}

async function upload(d: DashboardDeps, c: Ctx): Promise<{ path: string }> {
  const s = visibleSandbox(d, c);
  const path = pathQuery(c);
  const ac = new AbortController();
  c.req.on('close', () => {
    if (!c.req.complete) ac.abort();
  });
  await d.files.upload(s.id, path, c.req, ac.signal);
  return { path };
}

async function openTerminal(d: DashboardDeps, c: Ctx): Promise<{ id: string }> {
  const s = visibleSandbox(d, c);
  const f = await fields(c);
  const t = await d.terminals.open(s.id, sessionOf(c).id, f.int('cols') ?? 80, f.int('rows') ?? 24);
  return { id: t.id };
}

async function streamTerminal(d: DashboardDeps, c: Ctx): Promise<null> {
  const t = d.terminals.get(c.params['tid'] ?? '', sessionOf(c).id);
  const stream = openSse(c.req, c.res);
  const stop = t.watch((e) => {
    if (e.kind === 'data') stream.send('data', Buffer.from(e.data).toString('base64'));
    else stream.send('exit', e.status);
  });
  await stream.closed;
  stop();
  return null;
}

async function input(d: DashboardDeps, c: Ctx): Promise<{ ok: true }> {
  const t = d.terminals.get(c.params['tid'] ?? '', sessionOf(c).id);
  const data = (await fields(c)).string('data') ?? '';
  if (data.length > 65_536) throw invalidArgument('data', 'at most 64 KiB per call');
  await t.write(Buffer.from(data, 'utf8'));
  return { ok: true };
}

async function resize(d: DashboardDeps, c: Ctx): Promise<{ ok: true }> {
  const t = d.terminals.get(c.params['tid'] ?? '', sessionOf(c).id);
  const f = await fields(c);
  await t.resize(f.int('cols') ?? 80, f.int('rows') ?? 24);
  return { ok: true };
}

export const guestRoutes = (d: DashboardDeps): Route[] => [
  { method: 'GET', path: '/api/sandboxes/:id/files', handler: (c) => listFiles(d, c) },
  { method: 'GET', path: '/api/sandboxes/:id/files/content', handler: (c) => download(d, c) },
  { method: 'POST', path: '/api/sandboxes/:id/files/content', handler: (c) => upload(d, c) },
  { method: 'POST', path: '/api/sandboxes/:id/terminals', status: 201, handler: (c) => openTerminal(d, c) },
  { method: 'GET', path: '/api/terminals/:tid/output', handler: (c) => streamTerminal(d, c) },
  { method: 'POST', path: '/api/terminals/:tid/input', handler: (c) => input(d, c) },
  { method: 'POST', path: '/api/terminals/:tid/resize', handler: (c) => resize(d, c) },
  {
    method: 'DELETE',
    path: '/api/terminals/:tid',
    status: 204,
    handler: (c) => {
      d.terminals.get(c.params['tid'] ?? '', sessionOf(c).id).close();
      return Promise.resolve(null);
    },
  },
];
