/**
 * `kiln workspace push`: a tar stream of a repository into a running sandbox, journalled.
 * Steps: check the request and the sandbox; one command as the sandbox user makes an empty
 * staging directory beside the target (journalled: undo removes it), then unpacks the tar from
 * its stdin as kilnd streams it there (never held by kilnd; envd's StreamInput), makes the
 * mode's repository and, when nothing is at the target yet, renames it into place (journalled
 * `unpacked`); else as root rename it into place (replacing an older push) and, for --read-only,
 * hand it to root without write bits. A failure anywhere, or a crash of kilnd (start-up replays
 * the undo), leaves nothing of the push in the guest.
 */
import { Transform, type Readable } from 'node:stream';
import { WORKSPACE_MODES, type WorkspaceMode, type WorkspaceView } from '../../core/api-types.ts';
import type { GuestPlaced, UndoAction } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import type { ExecResult, GuestClient } from '../guest-client.ts';
import { OpRun } from '../journal.ts';
import { guestOf } from '../sandbox/agent.ts';
import type { ServiceContext } from '../sandbox/context.ts';
import { getSandbox } from '../sandbox/queries.ts';
import type { OpCtx } from '../sandbox/types.ts';
import { WORKSPACE_USER, stagePath, workspacePath } from '../../core/workspace-path.ts';
import { PLACED, REFUSED, STAGED, finishScript, pushScript, removeScript } from './scripts.ts';

export interface PushOpts {
  mode: WorkspaceMode;
  /** The host's HEAD commit. */
  head: string;
  /** The repository's name: the default guest path is /home/user/<name>. */
  name?: string | undefined;
  guestPath?: string | undefined;
  branch?: string | undefined;
  from?: string | undefined;
  readOnly?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

/** A git ref name from the request: no option-like or control characters (git checks the rest). */
function refArg(field: string, v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (v.startsWith('-') || /[\0-\x20\x7f]/.test(v) || v.length > 255)
    throw invalidArgument(field, `"${v}" is not a usable git ref name`);
  return v;
}

/** The push's options checked before the sandbox is looked at. */
export function checkPushOpts(o: PushOpts): PushOpts & { target: string } {
  if (!WORKSPACE_MODES.includes(o.mode))
    throw invalidArgument('mode', `"${o.mode}" is not one of ${WORKSPACE_MODES.join(', ')}`);
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(o.head))
    throw invalidArgument('head', "must be the full hex id of the host repository's HEAD commit");
  const branch = refArg('branch', o.branch);
  const from = refArg('from', o.from);
  if (from && !branch) throw invalidArgument('from', '--from needs --branch');
  return { ...o, branch, from, target: workspacePath(o.guestPath, o.name) };
}

/** The sandbox must be running; a dead one says so plainly. */
export function runningSandbox(sc: ServiceContext, id: string, what: string): void {
  const s = getSandbox(sc, id);
  if (s.state !== 'running')
    throw new KilnError(
      'invalid_state',
      `sandbox ${id} is ${s.state}${s.state === 'dead' ? ` (${s.endReason ?? 'ended'})` : ''}; ${what} needs a running sandbox`,
      { details: { sandboxId: id, state: s.state } },
    );
}

/** A guest step's failure as an error: REFUSED is the caller's bad path, anything else the guest's. */
export function stepFailed(what: string, r: ExecResult): KilnError {
  const msg = `${what} failed in the sandbox: ${r.stderr.trim() || r.status}`;
  return new KilnError(r.exitCode === REFUSED ? 'invalid_argument' : 'guest_agent_error', msg, {
    details: { exitCode: r.exitCode },
  });
}

async function step(
  g: GuestClient,
  what: string,
  cmd: string,
  user: string,
  signal?: AbortSignal,
): Promise<string> {
  const r = await g.exec(cmd, { user, login: false, ...(signal ? { signal } : {}) });
  if (r.exitCode !== 0) throw stepFailed(what, r);
  return r.stdout;
}

/**
 * Runs the push script with `body` as its stdin, sent once the script says it has staged (and
 * the staging directory is journalled). Resolves with what the script printed after that and the
 * bytes sent; on any failure the input is ended (the guest's command sees EOF) and drained.
 */
async function unpackStreamed(
  g: GuestClient,
  script: string,
  body: Readable,
  staged: () => void,
  signal: AbortSignal | undefined,
): Promise<{ out: string; bytes: number }> {
  // Counted as it passes to the guest: the body must not flow before the guest reads it.
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  body.on('error', (e) => counted.destroy(e));
  const sig = signal ? { signal } : {};
  let pid: number | undefined;
  let feeding: Promise<unknown> | undefined;
  let out = '';
  try {
    const r = await g.exec(script, {
      user: WORKSPACE_USER,
      login: false,
      stdin: true,
      onStart: (p) => (pid = p),
      onStdout: (chunk) => {
        out += Buffer.from(chunk).toString('utf8');
        if (feeding || pid === undefined || !out.startsWith(`${STAGED}\n`)) return;
        staged();
        feeding = g.writeStdin(pid, body.pipe(counted), sig);
      },
      ...sig,
    });
    // The input's own failure (the guest agent's) comes first; a command that stopped reading
    // (a refused path, a broken tar) ended the input and says why in its exit.
    await feeding;
    if (r.exitCode !== 0)
      throw stepFailed(feeding ? 'unpacking the repository' : 'preparing the guest path', r);
    if (!feeding) throw new KilnError('guest_agent_error', 'the push ended before the guest took its input');
    return { out: out.slice(STAGED.length + 1), bytes };
  } catch (e) {
    // Drain what the client still sends so it gets the error rather than a reset connection.
    body.unpipe(counted);
    body.resume();
    counted.destroy();
    await feeding?.catch(() => undefined);
    throw e;
  }
}

export async function pushWorkspace(
  sc: ServiceContext,
  id: string,
  body: Readable,
  opts: PushOpts,
  ctx: OpCtx,
): Promise<WorkspaceView> {
  const o = checkPushOpts(opts);
  runningSandbox(sc, id, 'a workspace push');
  const g = await guestOf(sc, id, ctx);
  const run = new OpRun(sc, 'workspace-push', id, ctx.opId);
  const stage = stagePath(o.target, run.op.id);
  const pushedAt = new Date(sc.now()).toISOString();
  // The undo of both steps: the staging directory, and the target if this push moved its tree
  // there itself (known by its mark, the staging path: an older push at the target stays).
  const placeIfFree = !o.readOnly;
  const undo: UndoAction = {
    action: 'guest-remove',
    sandboxId: id,
    paths: [stage],
    ...(placeIfFree ? { placed: { path: o.target, mark: stage } } : {}),
  };
  try {
    // One command unpacks the tar as it arrives (pushScript). Its input is held back until the
    // staging directory it made is journalled: a crash from then on leaves an undo for it.
    const { out, bytes } = await unpackStreamed(
      g,
      pushScript({ ...o, stage, pushedAt, placeIfFree }),
      body,
      () => {
        run.step('guest staging', undo);
      },
      o.signal,
    );
    run.step('unpacked', undo);
    const [base = o.head, branch = '', placed] = out.split('\n');
    // The line is the guest's word: a read-only push never takes it (root makes the tree root's).
    if (o.readOnly || placed !== PLACED)
      await step(
        g,
        'moving it into place',
        finishScript({ target: o.target, stage, readOnly: !!o.readOnly }),
        'root',
      );
    const view: WorkspaceView = {
      sandboxId: id,
      guestPath: o.target,
      mode: o.mode,
      base,
      branch: branch || null,
      readOnly: !!o.readOnly,
      bytes,
      pushedAt,
    };
    sc.store.appendEvent(id, 'info', `workspace pushed to ${o.target}`, { opId: ctx.opId, ...view });
    run.done();
    return view;
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}

/** The journal's `guest-remove`: as root, when the sandbox still runs (else its guest is gone). */
export async function removeGuestPaths(
  sc: ServiceContext,
  id: string,
  paths: string[],
  placed?: GuestPlaced,
): Promise<void> {
  const s = sc.store.getSandbox(id);
  if (s.state !== 'running') return;
  const g = await guestOf(sc, id, {});
  const r = await g.exec(removeScript(paths, placed), { user: 'root' });
  if (r.exitCode !== 0) throw stepFailed('removing a failed push', r);
}
