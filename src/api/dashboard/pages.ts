/** The dashboard's documents: the sign-in page (rendered here, no script) and the built front end. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { KilnError } from '../../core/errors.ts';

/** Headers every dashboard answer carries: no framing, no sniffing, no referrer, scripts only from here. */
export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/** The sign-in form: an API key and the form's double-submit token. */
export function loginPage(o: { csrf: string; error?: string; version: string }): string {
  const err = o.error ? `<p class="err" role="alert" id="login-error">${escapeHtml(o.error)}</p>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in · kiln</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:0;min-height:100vh;display:grid;place-items:center;background:#0f172a;color:#e2e8f0}
main{background:#1e293b;padding:2rem;border-radius:12px;width:min(26rem,92vw);box-shadow:0 10px 30px #0006}
h1{margin:0 0 1rem;font-size:1.4rem}label{display:block;margin-bottom:.4rem}
input{width:100%;box-sizing:border-box;padding:.6rem;border-radius:6px;border:1px solid #475569;background:#0f172a;color:inherit;font:inherit}
button{margin-top:1rem;width:100%;padding:.6rem;border:0;border-radius:6px;background:#f97316;color:#111;font:inherit;font-weight:600;cursor:pointer}
button:focus-visible,input:focus-visible{outline:3px solid #fdba74;outline-offset:2px}
.err{color:#fca5a5}.hint{color:#94a3b8;font-size:.85rem}
</style></head>
<body><main><h1>kiln dashboard</h1>${err}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="${escapeHtml(o.csrf)}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" required autofocus placeholder="e2b_…">
<button type="submit">Sign in</button>
</form>
<p class="hint">Create a key with <code>kiln api-key create</code>, or open the link <code>kiln dashboard --link</code> prints. kiln ${escapeHtml(o.version)}</p>
</main></body></html>`;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
};

/**
 * Sends a file of the built front end: `index.html` (never cached) or `assets/<name>` (names
 * carry a content hash: cached for good). Only names of one plain segment are served.
 */
export async function sendWebFile(
  res: ServerResponse,
  webDir: string | undefined,
  rel: string,
): Promise<void> {
  if (!webDir)
    throw new KilnError(
      'not_found',
      'the dashboard front end is not built: run ./kiln once (its set-up builds it) or `npm run build:dashboard`',
    );
  const m = /^(index\.html|assets\/[A-Za-z0-9_.-]+)$/.exec(rel);
  if (!m || rel.includes('..')) throw new KilnError('not_found', `no dashboard file "${rel}"`);
  const path = join(webDir, rel);
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new KilnError('not_found', `no dashboard file "${rel}"`);
  res.writeHead(200, {
    'content-type': TYPES[extname(rel)] ?? 'application/octet-stream',
    'content-length': st.size,
    'cache-control': rel === 'index.html' ? 'no-store' : 'private, max-age=31536000, immutable',
  });
  await new Promise<void>((resolve, reject) => {
    createReadStream(path).on('error', reject).pipe(res).on('finish', resolve).on('error', reject);
  });
}
