/** E2B's error body and the E2B API's router options (its error shape, the `X-API-KEY` check). */
import type { IncomingMessage } from 'node:http';
import { ERROR_CODES, type KilnError } from '../../core/errors.ts';
import type { ApiKeyService } from '../../daemon/api-keys.ts';
import type { RouterOpts } from '../http.ts';

/** E2B's error body: `{code: <http status>, message}`, the status chosen by the catalog code. */
export const e2bErrorBody = (e: KilnError): { code: number; message: string } => ({
  code: ERROR_CODES[e.code].status,
  message: e.message,
});

export function e2bRouterOpts(keys: ApiKeyService): RouterOpts {
  return {
    errorBody: e2bErrorBody,
    authenticate: (req: IncomingMessage) => {
      // The volume content API authenticates with the volume's own token (api/e2b/volumes.ts).
      if (req.url?.startsWith('/volumecontent/')) return;
      // A template build context upload carries its one-time link token (api/e2b/templates.ts).
      if (req.method === 'PUT' && req.url?.startsWith('/template-files/')) return;
      const k = req.headers['x-api-key'];
      keys.verify(typeof k === 'string' ? k : undefined);
    },
  };
}
