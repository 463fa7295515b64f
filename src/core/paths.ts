import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where kiln keeps slow-to-make artefacts (images, Node, .debs): $KILN_CACHE_DIR or ~/.cache/kiln. */
export function defaultCacheDir(): string {
  return (
    process.env['KILN_CACHE_DIR'] ?? join(process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'kiln')
  );
}

/** Where kiln keeps state and VM runtime directories: $KILN_STATE_DIR or ~/.local/state/kiln. */
export function defaultStateDir(): string {
  return (
    process.env['KILN_STATE_DIR'] ??
    join(process.env['XDG_STATE_HOME'] ?? join(homedir(), '.local', 'state'), 'kiln')
  );
}
