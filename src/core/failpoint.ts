import { invalidArgument } from './errors.ts';

/**
 * A failpoint (containerd's `internal/failpoint`): called at a named point of an operation; when
 * it is the armed one, the process dies right there, as a kill -9 would. Crash tests arm one
 * point at a time (`KILN_FAILPOINT=<scope>:<name>`, read by kilnd's entry) instead of sleeping
 * and hoping to hit a window. Journalled steps use the operation's kind as the scope and the
 * step's name (`pause:vm stopped`, just after the step is recorded); the QEMU driver uses `qemu`.
 */
export type Failpoint = (scope: string, name: string) => void;

/** Parses `<scope>:<name>`; `undefined` when none is armed. */
export function parseFailpoint(spec: string | undefined): { scope: string; name: string } | undefined {
  if (spec === undefined || spec === '') return undefined;
  const i = spec.indexOf(':');
  const scope = i < 0 ? '' : spec.slice(0, i);
  const name = i < 0 ? '' : spec.slice(i + 1);
  if (!/^[a-z0-9-]+$/.test(scope) || name === '')
    throw invalidArgument(
      'KILN_FAILPOINT',
      `"${spec}" is not <op kind>:<step name> (e.g. "pause:vm stopped")`,
    );
  return { scope, name };
}

/** The failpoint that calls `hit` at `<scope>:<name>` (parsed from `spec`) and nowhere else. */
export function failpointAt(spec: string | undefined, hit: (where: string) => void): Failpoint | undefined {
  const at = parseFailpoint(spec);
  if (!at) return undefined;
  return (scope, name) => {
    if (scope === at.scope && name === at.name) hit(`${scope}:${name}`);
  };
}
