/**
 * The shell steps a workspace push and export run in the guest (bash, git and GNU tar are in
 * kiln's guest image). Pure strings, so a unit test can run them against a repository on the
 * host. Every path is quoted with `sh`; an exit code of REFUSED means the guest path is unsafe.
 */
import { posix } from 'node:path';
import type { WorkspaceMode } from '../../core/api-types.ts';
import type { GuestPlaced } from '../../core/domain.ts';
import { LAST_PUSH_FILE, WORKSPACE_HOME, WORKSPACE_USER, sh } from '../../core/workspace-path.ts';

/** Exit code of a step that found the guest path unsafe (a parent that is a symbolic link). */
export const REFUSED = 17;
/** Exit code of a push whose HEAD in the guest is not the commit the host sent. */
export const WRONG_HEAD = 18;

/**
 * Runs `body` in a subshell: the agent runs commands as `bash -l -c`, and a login shell runs
 * ~/.bash_logout on exit under the script's `set -eu`, where an unset variable ends the shell
 * with 1 and hides the script's own exit code (REFUSED); seen in kiln's guests.
 */
const sub = (body: string): string => `(\n${body}\n)`;

/** Fails with REFUSED unless `dir` exists and is exactly where its name says (no link on the way). */
const exactDir = (dir: string): string =>
  `p=$(cd -- ${sh(dir)} 2>/dev/null && pwd -P) || p=''
[ "$p" = ${sh(dir)} ] || { echo "kiln: ${dir} is not a plain directory under ${WORKSPACE_HOME} (a symbolic link or missing)" >&2; exit ${REFUSED}; }`;

/** The line a push script prints once its staging directory exists, before it reads its input. */
export const STAGED = 'kiln: staged';

const prepareBody = (target: string, stage: string): string => {
  const parent = posix.dirname(target);
  // Shell tests before each command: under TCG a process start costs ~100 ms, and the parent
  // exists and the staging directory does not in nearly every push.
  return `[ -d ${sh(parent)} ] || mkdir -p -- ${sh(parent)}
${exactDir(parent)}
if [ -e ${sh(stage)} ] || [ -L ${sh(stage)} ]; then rm -rf -- ${sh(stage)}; fi
mkdir -- ${sh(stage)}`;
};

/** As the sandbox user: make the target's parent and an empty staging directory beside it. */
export function prepareScript(target: string, stage: string): string {
  return sub(`set -eu
${prepareBody(target, stage)}`);
}

/** The line a push script prints last when it moved the tree into place itself. */
export const PLACED = 'kiln: placed';

export interface PushScriptOpts extends ExtractOpts {
  target: string;
  /**
   * Move the tree into place in the same command when nothing is at the target yet (the sandbox
   * user can, and saves a root command: ~1 s under TCG). A target to replace, or a read-only
   * push, is left to finishScript as root. Then PLACED is the script's last line.
   */
  placeIfFree: boolean;
  /** Where the last push's path is noted (LAST_PUSH_FILE; tests on the host give their own). */
  lastPushFile?: string;
}

/**
 * As the sandbox user, the push in one command, its tar on stdin: prepare (as prepareScript), print
 * STAGED and wait for the input (kilnd journals the staging directory first, then sends it),
 * then extract (as extractScript) and, with `placeIfFree`, move it into place. One command, not
 * three: under TCG every command in the guest costs a process start-up, and the tar is unpacked as
 * it arrives instead of after a copy.
 */
export function pushScript(o: PushScriptOpts): string {
  const t = sh(o.target);
  const place = o.placeIfFree
    ? `
cd /
if [ ! -e ${t} ] && [ ! -L ${t} ]; then
  mv -T -- ${sh(o.stage)} ${t}
  printf '%s\\n' ${t} > ${sh(o.lastPushFile ?? LAST_PUSH_FILE)}
  printf '%s\\n' ${sh(PLACED)}
fi`
    : '';
  return sub(`set -eu
${prepareBody(o.target, o.stage)}
printf '%s\\n' ${sh(STAGED)}
${extractBody(o)}${place}`);
}

export interface ExtractOpts {
  stage: string;
  mode: WorkspaceMode;
  /** The host's HEAD: the guest's HEAD must be it after extraction. */
  head: string;
  branch?: string | undefined;
  from?: string | undefined;
  pushedAt: string;
}

/**
 * As the sandbox user, in the staging directory: unpack the tar from stdin, make the mode's
 * repository, check HEAD, create the branch; prints the base commit and the branch (an empty
 * line when detached).
 */
export function extractScript(o: ExtractOpts): string {
  return sub(`set -eu
${extractBody(o)}`);
}

function extractBody(o: ExtractOpts): string {
  const git = 'git -c advice.detachedHead=false';
  const modeStep =
    o.mode === 'shallow_overlay'
      ? `${git} config core.bare false\n${git} reset -q`
      : o.mode === 'metadata_only'
        ? `${git} reset -q --hard`
        : // The host's index: its stat data is the host's files' (inode, ctime, owner), which no
          // unpacked file has, so a plain refresh would read and hash every file again (seconds
          // for 50 MB under TCG). tar keeps each file's mtime, size and mode: git is told to
          // compare only those in this copy (core.checkStat=minimal, core.trustctime=false; its
          // racy-git check still reads a file changed within the index's own second).
          // (Written with the shell, not `git config`: two processes fewer.)
          `if [ -f .git/config ] && [ ! -L .git/config ]; then printf '\\n[core]\\n\\tcheckStat = minimal\\n\\ttrustctime = false\\n' >> .git/config
else ${git} config core.checkStat minimal; ${git} config core.trustctime false; fi
${git} update-index -q --refresh >/dev/null || true`;
  // A new branch at HEAD leaves the base where it was; one made --from another ref moves it.
  const branchStep = o.branch
    ? `${git} checkout -q -b ${sh(o.branch)}${o.from ? ` ${sh(o.from)}\nbase=$(${git} rev-parse HEAD)` : ''}`
    : '';
  // The branch from .git/HEAD with the shell (as `git symbolic-ref --short HEAD` says it).
  return `cd -- ${sh(o.stage)}
tar -x -i -f -
${modeStep}
base=$(${git} rev-parse HEAD)
[ "$base" = ${sh(o.head)} ] || { echo "kiln: the guest's HEAD is not ${o.head}: the push arrived incomplete" >&2; exit ${WRONG_HEAD}; }
${branchStep}
printf '%s\\n' "$base" > .git/kiln-base
printf '%s\\n' ${sh(o.stage)} > .git/kiln-push
if [ -d .git ] && read -r h < .git/HEAD; then
  case "$h" in 'ref: refs/heads/'*) br=\${h#'ref: refs/heads/'} ;; *) br='' ;; esac
else br=$(${git} symbolic-ref -q --short HEAD || true); fi
printf '%s\\n' "$base" "$br"`;
}

/**
 * As root: move the staged tree into place (an existing target is replaced), make it read-only
 * (owned by root, no write bits) when asked, and note the path as the last push.
 */
export function finishScript(o: { target: string; stage: string; readOnly: boolean }): string {
  const t = sh(o.target);
  const old = sh(`${o.stage}.old`);
  return sub(`set -eu
${exactDir(posix.dirname(o.target))}
if [ -e ${t} ] || [ -L ${t} ]; then mv -T -- ${t} ${old}; fi
mv -T -- ${sh(o.stage)} ${t}
rm -rf -- ${old}
${o.readOnly ? `chown -R -h root:root -- ${t}\nchmod -R a-w -- ${t}` : ''}
printf '%s\\n' ${t} > ${sh(LAST_PUSH_FILE)}
chown ${WORKSPACE_USER}: ${sh(LAST_PUSH_FILE)} 2>/dev/null || true`);
}

/**
 * As root: removes what a failed push left (idempotent). A push interrupted by a crash of kilnd
 * leaves its command waiting for more input in the guest (the agent keeps a process whose caller
 * went away, as envd does): processes working in those paths are killed first.
 */
export const removeScript = (paths: string[], placed?: GuestPlaced): string => {
  // The tree a push moved into place itself goes too, but only while it is that push's (its mark):
  // never an older push it did not replace.
  const own = placed
    ? `\nif [ "$(head -n 1 -- ${sh(`${placed.path}/.git/kiln-push`)} 2>/dev/null)" = ${sh(placed.mark)} ]; then rm -rf -- ${sh(placed.path)}; fi`
    : '';
  return `for p in /proc/[0-9]*; do
  d=$(readlink "$p/cwd" 2>/dev/null) || continue
  for x in ${paths.map(sh).join(' ')}; do
    case "$d" in "$x" | "$x/"* | "$x (deleted)") kill -9 "\${p#/proc/}" 2>/dev/null || true ;; esac
  done
done
rm -rf -- ${paths.map(sh).join(' ')}${own}`;
};

/**
 * As the sandbox user: the export of the repository at `target` (default: the last push's) against
 * `base` (default: the push's base). Everything goes through a temporary index and object
 * directory (the repository's objects as an alternate), so the repository itself is only read:
 * its index stays byte-identical and a read-only tree can be exported. Prints the guest path, the
 * base, the byte count of the name-status list, the list (`-z`), then the binary patch.
 */
export function exportScript(o: { target?: string | undefined; base?: string | undefined }): string {
  const git = 'git -c safe.directory=* -c core.quotepath=false -c diff.noprefix=false -c core.fileMode=true';
  return sub(`set -eu
t=${o.target ? sh(o.target) : `$(head -n 1 ${sh(LAST_PUSH_FILE)} 2>/dev/null || true)`}
[ -n "$t" ] || { echo "kiln: nothing was pushed to this sandbox: give --guest-path" >&2; exit ${REFUSED}; }
cd -- "$t" 2>/dev/null || { echo "kiln: no workspace at $t in the sandbox" >&2; exit ${REFUSED}; }
gd=$(${git} rev-parse --absolute-git-dir)
base=${o.base ? sh(o.base) : `$(head -n 1 "$gd/kiln-base" 2>/dev/null || true)`}
[ -n "$base" ] || { echo "kiln: $t has no recorded base commit: give --base" >&2; exit ${REFUSED}; }
base=$(${git} rev-parse --verify -q "$base^{commit}") || { echo "kiln: the base commit is not in the guest's repository" >&2; exit ${REFUSED}; }
tmp=$(mktemp -d /tmp/kiln-export.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT
mkdir "$tmp/objects"
export GIT_INDEX_FILE="$tmp/index" GIT_OBJECT_DIRECTORY="$tmp/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$gd/objects"
if [ -f "$gd/index" ]; then cp -- "$gd/index" "$tmp/index"; fi
${git} add -A
${git} diff --cached --name-status -z -M "$base" > "$tmp/names"
printf '%s\\n%s\\n%s\\n' "$t" "$base" "$(wc -c < "$tmp/names")"
cat -- "$tmp/names"
${git} diff --cached --binary --full-index -M "$base"`);
}
