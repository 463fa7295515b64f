/**
 * GET /api/templates/:id/builds/:bid/log: a template build's log as server-sent events, live
 * while it builds. `lines` events carry the new lines (their `id` is the offset after them, so
 * a browser that reconnects sends it back as `Last-Event-ID` and resumes there); one `end`
 * event carries the final status, and the stream ends. The build wakes the stream on each line
 * it writes (daemon/templates/build-follow.ts): no timer per browser, no polling.
 */
import type { DashBuildLine, DashBuildEnd } from '../../core/dashboard-types.ts';
import { KilnError, asKilnError } from '../../core/errors.ts';
import type { Ctx } from '../http.ts';
import { callerOf, idOf, type DashboardDeps } from './deps.ts';
import { openSse } from './sse.ts';
import { reasonText } from './views.ts';

/** Where to start: the browser's `Last-Event-ID` on a reconnect, else `?offset=` (default 0). */
function offsetOf(c: Ctx): string | undefined {
  const last = c.req.headers['last-event-id'];
  return typeof last === 'string' && last !== '' ? last : (c.query.get('offset') ?? undefined);
}

export async function streamBuildLog(d: DashboardDeps, c: Ctx): Promise<null> {
  if (!d.builds) throw new KilnError('not_found', 'template builds are not served here');
  const ac = new AbortController();
  // Checked before the stream opens: a build the session does not see is a plain 404.
  const events = d.builds.follow(idOf(c), c.params['bid'] ?? '', offsetOf(c), callerOf(c), ac.signal);
  const stream = openSse(c.req, c.res);
  void stream.closed.then(() => {
    ac.abort();
  });
  try {
    for await (const e of events) {
      if (e.kind === 'lines') {
        const lines: DashBuildLine[] = e.lines.map((l) => ({
          at: l.timestamp,
          level: l.level,
          message: l.message,
        }));
        stream.send('lines', lines, String(e.from + e.lines.length));
        await stream.drained();
      } else {
        const end: DashBuildEnd = { status: e.build.status, reason: reasonText(e.build.reason) };
        stream.send('end', end);
      }
    }
  } catch (e) {
    // The build's records went away under the stream (its template was deleted).
    c.log.info({ err: asKilnError(e).message }, 'dashboard: a build log stream ended early');
    stream.send('end', { status: 'gone', reason: asKilnError(e).message } satisfies DashBuildEnd);
  }
  stream.end();
  return null;
}
