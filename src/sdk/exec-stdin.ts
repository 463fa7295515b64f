import { request } from 'node:http';

/**
 * Streams `input` to the stdin of process `pid` of sandbox `id` (an exec with `stdin: true`;
 * POST /v1/sandboxes/{id}/processes/{pid}/stdin), which kilnd closes at its end. A failure is
 * not thrown: kilnd closes the command's stdin on it, and the command's own end says what came of
 * that. `stop` (the command has ended) stops reading the input.
 */
export function feedStdin(
  socketPath: string,
  id: string,
  pid: number,
  input: NodeJS.ReadableStream,
): { stop: () => void } {
  const req = request({
    socketPath,
    method: 'POST',
    path: `/v1/sandboxes/${encodeURIComponent(id)}/processes/${pid}/stdin`,
    agent: false,
    headers: { 'content-type': 'application/octet-stream' },
  });
  req.on('response', (res) => res.resume());
  req.on('error', () => undefined);
  input.pipe(req);
  return {
    stop: () => {
      input.unpipe(req);
      req.destroy();
    },
  };
}
