import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Channel } from './channel.ts';
import { keepaliveMs } from './keepalive.ts';
import {
  Process,
  Signal,
  type ProcessEventSchema,
  type ProcessInfoSchema,
  type ProcessInput,
  type ProcessSelector,
  type StartRequest,
  type StartResponseSchema,
} from '../core/envd/process/process_pb.js';
import { ProcessError, type ManagedProcess, type ProcEvent, type ProcessManager } from './processes.ts';
import type { GuestUser } from './users.ts';
import type { AgentState } from './state.ts';

type EventInit = MessageInitShape<typeof ProcessEventSchema>;

export interface ProcessServiceDeps {
  processes: ProcessManager;
  state: AgentState;
  /** Resolves the request's user (Authorization: Basic) or the default user; throws unauthenticated. */
  userOf: (ctx: HandlerContext) => Promise<GuestUser>;
}

export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (e instanceof ProcessError) {
    const code = {
      invalid_argument: Code.InvalidArgument,
      not_found: Code.NotFound,
      failed_precondition: Code.FailedPrecondition,
      internal: Code.Internal,
    }[e.kind];
    return new ConnectError(e.message, code);
  }
  return new ConnectError(e instanceof Error ? e.message : String(e), Code.Internal);
}

function eventInit(e: ProcEvent): EventInit {
  if (e.type === 'end') {
    const { exitCode, exited, status, error } = e.end;
    return {
      event: { case: 'end', value: { exitCode, exited, status, ...(error === undefined ? {} : { error }) } },
    };
  }
  return { event: { case: 'data', value: { output: { case: e.stream, value: e.data } } } };
}

/**
 * Follows a process: its events until `end`, with a keepalive after each idle interval. Ends
 * (without touching the process) when the client goes away: processes outlive their streams.
 */
async function* follow(p: ManagedProcess, ctx: HandlerContext): AsyncGenerator<EventInit> {
  const ch = new Channel<ProcEvent | 'keepalive'>();
  const interval = keepaliveMs(ctx);
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      ch.push('keepalive');
      arm();
    }, interval);
  };
  const onEvent = (e: ProcEvent): void => {
    ch.push(e);
    arm();
    if (e.type === 'end') ch.close();
  };
  const onAbort = (): void => {
    ch.close();
  };
  if (p.end) {
    ch.push({ type: 'end', end: p.end });
    ch.close();
  } else {
    p.on('event', onEvent);
    arm();
  }
  ctx.signal.addEventListener('abort', onAbort);
  try {
    for await (const e of ch) {
      yield e === 'keepalive' ? { event: { case: 'keepalive', value: {} } } : eventInit(e);
    }
  } finally {
    clearTimeout(timer);
    p.off('event', onEvent);
    ctx.signal.removeEventListener('abort', onAbort);
  }
}

/** Finds a process; only Connect may see one that already ended (to fetch its end event). */
function selectProcess(
  processes: ProcessManager,
  sel: ProcessSelector | undefined,
  allowEnded = false,
): ManagedProcess {
  const s = sel?.selector;
  let p: ManagedProcess | undefined;
  if (s?.case === 'pid') p = processes.get(s.value);
  else if (s?.case === 'tag') p = processes.byTag(s.value);
  else throw new ConnectError('process selector must name a pid or a tag', Code.Unimplemented);
  if (!p || (p.end && !allowEnded))
    throw new ConnectError(`process with ${s.case} ${String(s.value)} not found`, Code.NotFound);
  return p;
}

/** Runs `fn`, turning what it throws into a ConnectError. */
async function asConnect<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toConnectError(e);
  }
}

/** Writes stdin or PTY bytes; `undefined` (an empty message) writes nothing. */
async function writeInput(p: ManagedProcess, input: ProcessInput['input'] | undefined): Promise<void> {
  await asConnect(async () => {
    if (input?.case === 'stdin') await p.writeStdin(input.value);
    else if (input?.case === 'pty') p.writePty(input.value);
  });
}

/** Start: runs the command as the request's user and streams its events. */
async function* startProcess(
  d: ProcessServiceDeps,
  req: StartRequest,
  ctx: HandlerContext,
): AsyncGenerator<MessageInitShape<typeof StartResponseSchema>> {
  const user = await d.userOf(ctx);
  const cfg = req.process;
  if (!cfg) throw new ConnectError('process config is required', Code.InvalidArgument);
  if (!cfg.cmd) throw new ConnectError('process.cmd is required', Code.InvalidArgument);
  const size = req.pty?.size;
  const p = await asConnect(() =>
    d.processes.start({
      config: { cmd: cfg.cmd, args: cfg.args, envs: cfg.envs, cwd: cfg.cwd },
      user,
      pty: req.pty ? { cols: size?.cols || 80, rows: size?.rows || 24 } : undefined,
      tag: req.tag,
      stdin: req.stdin ?? true,
      // The deadline of the Start call is the process's lifetime (E2B's semantics).
      timeoutMs: ctx.timeoutMs() ?? 0,
      baseEnv: d.state.envVars,
      workdir: d.state.defaultWorkdir,
    }),
  );
  yield* withStart(p, ctx);
}

/** A process's `start` event, then its events until `end` (Start and Connect answer alike). */
async function* withStart(p: ManagedProcess, ctx: HandlerContext): AsyncGenerator<{ event: EventInit }> {
  const events = follow(p, ctx);
  yield { event: { event: { case: 'start', value: { pid: p.pid } } } };
  for await (const event of events) yield { event };
}

function processInfo(p: ManagedProcess): MessageInitShape<typeof ProcessInfoSchema> {
  return {
    pid: p.pid,
    ...(p.tag === undefined ? {} : { tag: p.tag }),
    config: {
      cmd: p.config.cmd,
      args: p.config.args,
      envs: p.config.envs,
      ...(p.config.cwd === undefined ? {} : { cwd: p.config.cwd }),
    },
  };
}

export function processService(d: ProcessServiceDeps): ServiceImpl<typeof Process> {
  const select = (sel: ProcessSelector | undefined, allowEnded = false): ManagedProcess =>
    selectProcess(d.processes, sel, allowEnded);
  return {
    start: (req, ctx) => startProcess(d, req, ctx),
    // A generator, so a bad selector fails the stream as before (not the call).
    async *connect(req, ctx) {
      yield* withStart(select(req.process, true), ctx);
    },
    list: () => ({ processes: d.processes.list().map(processInfo) }),

    async sendInput(req) {
      const p = select(req.process);
      const input = req.input?.input;
      if (input?.case !== 'stdin' && input?.case !== 'pty')
        throw new ConnectError('input must be stdin or pty bytes', Code.InvalidArgument);
      await writeInput(p, input);
      return {};
    },

    async streamInput(reqs) {
      let p: ManagedProcess | undefined;
      for await (const r of reqs) {
        const ev = r.event;
        if (ev.case === 'start') p = select(ev.value.process);
        else if (ev.case === 'data') {
          if (!p)
            throw new ConnectError('the first message must select the process', Code.FailedPrecondition);
          await writeInput(p, ev.value.input?.input);
        }
      }
      return {};
    },

    async closeStdin(req) {
      const p = select(req.process);
      await asConnect(() => {
        p.closeStdin();
      });
      return {};
    },

    sendSignal(req) {
      const p = select(req.process);
      if (req.signal === Signal.SIGKILL) p.signal('SIGKILL');
      else if (req.signal === Signal.SIGTERM) p.signal('SIGTERM');
      else
        throw new ConnectError(
          `signal ${req.signal} is not supported (SIGTERM or SIGKILL)`,
          Code.Unimplemented,
        );
      return {};
    },

    async update(req) {
      const p = select(req.process);
      const size = req.pty?.size;
      if (!size) throw new ConnectError('pty.size is required', Code.InvalidArgument);
      await asConnect(() => {
        p.resize(size.cols, size.rows);
      });
      return {};
    },
  };
}
