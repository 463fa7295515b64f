/** The two workspace routes of the native API, streamed over kilnd's unix socket. */
import { request } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import type { WorkspaceExportHead, WorkspaceMode, WorkspaceView } from '../../core/api-types.ts';
import { KilnError } from '../../core/errors.ts';
import { settleAnswer } from '../client.ts';

export interface PushQuery {
  mode: WorkspaceMode;
  head: string;
  name: string;
  guestPath?: string | undefined;
  branch?: string | undefined;
  from?: string | undefined;
  readOnly?: boolean | undefined;
}

const query = (o: Record<string, string | boolean | undefined>): string => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== '') q.set(k, String(v));
  return q.size ? `?${q.toString()}` : '';
};

/** Streams `tar` as a push's body; resolves with what kilnd laid down. */
export function postWorkspace(
  socketPath: string,
  id: string,
  tar: Readable,
  q: PushQuery,
  onProgress?: (bytes: number) => void,
): Promise<WorkspaceView> {
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath,
      method: 'POST',
      path: `/v1/sandboxes/${encodeURIComponent(id)}/workspace${query({ ...q })}`,
      agent: false,
      headers: { 'content-type': 'application/x-tar' },
    });
    req.on('response', (res) => {
      settleAnswer(
        res,
        (text) => {
          resolve(JSON.parse(text) as WorkspaceView);
        },
        reject,
        200,
      );
    });
    // kilnd may answer (a refusal) before the body is sent; the answer wins over a write error.
    // The timer keeps the process alive (not unref'd): a CLI whose push broke must not exit 0.
    req.on('error', (e) => {
      setTimeout(() => {
        reject(e);
      }, 1000);
    });
    let n = 0;
    tar.on('data', (c: Buffer) => {
      n += c.length;
      onProgress?.(n);
    });
    tar.on('error', (e) => {
      req.destroy(e);
      reject(e);
    });
    tar.pipe(req);
  });
}

export interface ExportQuery {
  guestPath?: string | undefined;
  base?: string | undefined;
}

/**
 * Streams a workspace's patch into `out` (not ended here); resolves with the head (guest path,
 * base, changed files) once the whole patch is written.
 */
export function postWorkspaceExport(
  socketPath: string,
  id: string,
  q: ExportQuery,
  out: Writable,
  onProgress?: (bytes: number) => void,
): Promise<WorkspaceExportHead> {
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath,
      method: 'POST',
      path: `/v1/sandboxes/${encodeURIComponent(id)}/workspace/export${query({ ...q })}`,
      agent: false,
    });
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        settleAnswer(res, () => undefined, reject);
        return;
      }
      let head: WorkspaceExportHead | undefined;
      let buf = Buffer.alloc(0);
      let n = 0;
      res.on('data', (c: Buffer) => {
        if (head) {
          n += c.length;
          onProgress?.(n);
          if (!out.write(c)) {
            res.pause();
            out.once('drain', () => res.resume());
          }
          return;
        }
        buf = Buffer.concat([buf, c]);
        const nl = buf.indexOf(10);
        if (nl < 0) return;
        head = JSON.parse(buf.subarray(0, nl).toString('utf8')) as WorkspaceExportHead;
        const rest = buf.subarray(nl + 1);
        n += rest.length;
        if (rest.length) out.write(rest);
      });
      res.on('end', () => {
        if (head) resolve(head);
        else reject(new KilnError('internal', 'the export ended before its header'));
      });
      res.on('error', (e) => {
        reject(
          new KilnError('internal', `the export broke off after ${n} bytes: ${e.message}`, { cause: e }),
        );
      });
      res.on('aborted', () => {
        reject(new KilnError('internal', `the export broke off after ${n} bytes`));
      });
    });
    req.on('error', reject);
    req.end();
  });
}
