/**
 * POST /v1/sandboxes/:id/exec: streams newline-delimited JSON, `{"stdout":b64}` /
 * `{"stderr":b64}` lines, then `{"exit":{...}}` (or `{"error":{...}}` once the stream has begun).
 * With `stdin: true` the command's stdin stays open and the first line is `{"start":{"pid":N}}`;
 * POST /v1/sandboxes/:id/processes/:pid/stdin then streams its body there and closes it (two
 * requests, so no client or proxy needs a full-duplex HTTP/1.1 exchange).
 */
import type { ExecLine, ExecRequest } from '../../core/api-types.ts';
import { finished } from 'node:stream/promises';
import { KilnError, asKilnError, invalidArgument } from '../../core/errors.ts';
import { MAX_EXEC_TIMEOUT_MS, validateInt } from '../../core/validate.ts';
import type { Ctx, Route } from '../http.ts';
import { required } from '../parse.ts';
import { fields, idOf, type NativeDeps } from './deps.ts';

/** The request, checked (400 naming the field) before the sandbox is looked at. */
async function parseExec(c: Ctx): Promise<ExecRequest> {
  const f = await fields(c);
  const cmd = required('cmd', f.string('cmd') || undefined);
  const user = f.string('user');
  const cwd = f.string('cwd');
  const t = f.raw('timeoutMs');
  const timeoutMs = t === undefined ? undefined : validateInt('timeoutMs', t, 0, MAX_EXEC_TIMEOUT_MS);
  const envs = f.stringMap('envs') ?? {};
  const stdin = f.bool('stdin') ?? false;
  return {
    cmd,
    ...(stdin ? { stdin } : {}),
    ...(user ? { user } : {}),
    ...(cwd ? { cwd } : {}),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    envs,
  };
}

async function exec(d: NativeDeps, c: Ctx): Promise<null> {
  const id = idOf(c);
  const { cmd, ...opts } = await parseExec(c);
  const s = d.svc.get(id);
  if (s.state !== 'running')
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; exec needs running`);
  const ac = new AbortController();
  c.res.on('close', () => {
    if (!c.res.writableFinished) ac.abort();
  });
  c.res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  const line = (v: ExecLine): void => {
    c.res.write(JSON.stringify(v) + '\n');
  };
  try {
    const r = await d.svc.exec(
      id,
      cmd,
      {
        ...opts,
        onStdout: (x) => {
          line({ stdout: Buffer.from(x).toString('base64') });
        },
        onStderr: (x) => {
          line({ stderr: Buffer.from(x).toString('base64') });
        },
        signal: ac.signal,
        ...(opts.stdin
          ? {
              onStart: (pid: number) => {
                line({ start: { pid } });
              },
            }
          : {}),
      },
      { opId: c.opId },
    );
    line({ exit: { exitCode: r.exitCode, status: r.status } });
  } catch (e) {
    const k = asKilnError(e);
    line({ error: { code: k.code, message: k.message, opId: c.opId } });
  }
  c.res.end();
  return null;
}

/**
 * The request body, as it arrives, to the stdin of process `:pid` (an exec with `stdin: true`),
 * closed at its end. 204 also when the command ended first (the rest of the body is dropped, as
 * a pipe whose reader went away): the exec stream says how it ended.
 */
async function stdin(d: NativeDeps, c: Ctx): Promise<null> {
  const pidText = c.params['pid'] ?? '';
  const pid = /^[1-9][0-9]{0,9}$/.test(pidText) ? Number(pidText) : NaN;
  try {
    if (!Number.isSafeInteger(pid)) throw invalidArgument('pid', `"${pidText}" is not a process id`);
    const ac = new AbortController();
    c.req.on('close', () => {
      if (!c.req.readableEnded) ac.abort();
    });
    await d.svc.writeStdin(idOf(c), pid, c.req, { signal: ac.signal }, { opId: c.opId });
  } finally {
    // Refused, or the command ended: read the rest, so the client gets the answer, not a reset.
    c.req.resume();
    await finished(c.req).catch(() => undefined);
  }
  return null;
}

export const execRoutes = (d: NativeDeps): Route[] => [
  { method: 'POST', path: '/v1/sandboxes/:id/exec', handler: (c) => exec(d, c) },
  {
    method: 'POST',
    path: '/v1/sandboxes/:id/processes/:pid/stdin',
    handler: (c) => stdin(d, c),
    status: 204,
  },
];
