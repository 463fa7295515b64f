/**
 * `Uint8Array.prototype.toBase64` (the TC39 "Uint8Array to/from base64" method) where this Node
 * lacks it, on Buffer's native codec. protobuf-es encodes `bytes` fields in JSON with it when it
 * is there (it looks once, as it loads), else with a loop in JavaScript: the e2b SDK's output
 * stream is JSON, and under the agent's --jitless that loop made 20 MB of stdout take 48 s (3 s with this).
 * V8's own method (`--js-base-64` in Node 24) is not used: it ignores a view's byteOffset.
 * Imported first by main.ts, before anything loads protobuf-es.
 */

interface ToBase64Options {
  alphabet?: 'base64' | 'base64url';
  omitPadding?: boolean;
}

/** What the method answers, for one view (its own bytes only, whatever its offset). */
export function toBase64(bytes: Uint8Array, o: ToBase64Options = {}): string {
  const alphabet: string = o.alphabet ?? 'base64';
  if (alphabet !== 'base64' && alphabet !== 'base64url')
    throw new TypeError(`alphabet must be "base64" or "base64url", not ${alphabet}`);
  const url = alphabet === 'base64url';
  const s = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(
    url ? 'base64url' : 'base64',
  );
  // Buffer pads "base64" and never "base64url"; the method pads both unless told not to.
  if (o.omitPadding) return url ? s : s.replace(/=+$/, '');
  return url ? s + '='.repeat((4 - (s.length % 4)) % 4) : s;
}

/** Installs the method where it is missing; answers whether it did. */
export function installToBase64(): boolean {
  const proto = Uint8Array.prototype as { toBase64?: unknown };
  if (typeof proto.toBase64 === 'function') return false;
  Object.defineProperty(Uint8Array.prototype, 'toBase64', {
    value: function (this: Uint8Array, o?: ToBase64Options): string {
      return toBase64(this, o);
    },
    writable: true,
    configurable: true,
  });
  return true;
}

installToBase64();
