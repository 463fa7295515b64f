/** kilnd's sockets: is a unix socket served, listen on a loopback TCP port, close a server. */
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { KilnError } from '../core/errors.ts';

/** True when something answers on the unix socket. */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}

/** Listens on 127.0.0.1; a default port that is taken falls back to a free one. */
export async function listenTcp(
  server: Server,
  given: number | undefined,
  envName: string,
  dflt: number,
  log: Logger,
): Promise<number> {
  const explicit = given;
  if (explicit !== undefined && (!Number.isInteger(explicit) || explicit < 0 || explicit > 65535))
    throw new KilnError(
      'invalid_argument',
      `${envName}: must be a TCP port (0-65535), got "${String(given)}"`,
    );
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const onError = (e: Error): void => {
        reject(e);
      };
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });
  try {
    return await listen(explicit ?? dflt);
  } catch (e) {
    const inUse = (e as NodeJS.ErrnoException).code === 'EADDRINUSE';
    if (explicit === undefined && inUse) {
      log.warn({ port: dflt }, `${envName}: port ${dflt} is taken; using a free port (see kiln e2b env)`);
      return listen(0);
    }
    throw new KilnError(
      inUse ? 'conflict' : 'internal',
      `cannot listen on 127.0.0.1:${explicit ?? dflt} (${envName}): ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/** Closes a server and every connection it holds; a server that never listened is fine too. */
export function closeServer(s: Server): Promise<void> {
  s.closeAllConnections();
  return new Promise<void>((r) => {
    s.close(() => {
      r();
    });
  });
}
