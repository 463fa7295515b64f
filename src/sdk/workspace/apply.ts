/**
 * `kiln workspace export --apply`: applies an exported patch to the local repository. A patch
 * that applies cleanly is applied to the working tree; otherwise a three-way apply is tried, but
 * only after a dry run found no conflict. On a conflict nothing is changed and the error names
 * the files.
 */
import { KilnError } from '../../core/errors.ts';
import { gitRaw } from './git.ts';

export interface ApplyResult {
  /** `clean`: applied as is; `three-way`: merged with the local changes through the index. */
  how: 'clean' | 'three-way' | 'empty';
}

/** The files git's apply diagnostics name (patch failures and three-way conflicts). */
export function conflictingFiles(stderr: string): string[] {
  const files = new Set<string>();
  for (const line of stderr.split('\n')) {
    const m =
      /^error: patch failed: (.+):\d+$/.exec(line) ??
      /^error: (.+): (?:patch does not apply|does not exist in index|already exists in (?:working directory|index)|does not match index)$/.exec(
        line,
      ) ??
      /^Applied patch to '(.+)' with conflicts\.$/.exec(line) ??
      /^U (.+)$/.exec(line);
    if (m?.[1]) files.add(m[1]);
  }
  return [...files].sort();
}

/** Applies the patch file `patch` in the repository at `root`. */
export async function applyPatch(root: string, patch: string, patchBytes: number): Promise<ApplyResult> {
  if (patchBytes === 0) return { how: 'empty' };
  const plain = await gitRaw(root, ['apply', '--check', patch]);
  if (plain.code === 0) {
    const r = await gitRaw(root, ['apply', patch]);
    if (r.code !== 0)
      throw new KilnError('internal', `git apply failed after its check passed: ${r.stderr.trim()}`);
    return { how: 'clean' };
  }
  // `--3way --check` exits 0 even when it would leave conflicts; it says so on stderr.
  const dry = await gitRaw(root, ['apply', '--3way', '--check', patch]);
  const conflicts = dry.code !== 0 || /with conflicts/.test(dry.stderr);
  if (!conflicts) {
    const r = await gitRaw(root, ['apply', '--3way', patch]);
    if (r.code === 0 && !/with conflicts/.test(r.stderr)) return { how: 'three-way' };
    throw new KilnError('internal', `git apply --3way failed after its check passed: ${r.stderr.trim()}`);
  }
  const files = conflictingFiles(`${plain.stderr}\n${dry.stderr}`);
  throw new KilnError(
    'conflict',
    `the patch conflicts with the local repository in ${files.length ? files.join(', ') : 'some files'}; nothing was changed (save the patch with -o and merge by hand)`,
    { details: { files } },
  );
}
