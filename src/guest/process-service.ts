import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Channel } from './channel.ts';
import {
  Process,
  Signal,
  type ProcessEventSchema,
  type ProcessSelector,
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

/** envd's keepalive default when the client names no interval (seconds). */
const DEFAULT_KEEPALIVE_S = 90;

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

function keepaliveMs(ctx: HandlerContext): number {
  const s = Number(ctx.requestHeader.get('keepalive-ping-interval'));
  return (Number.isFinite(s) && s > 0 ? s : DEFAULT_KEEPALIVE_S) * 1000;
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

export function processService(d: ProcessServiceDeps): ServiceImpl<typeof Process> {
  /** Finds a process; only Connect may see one that already ended (to fetch its end event). */
  const select = (sel: ProcessSelector | undefined, allowEnded = false): ManagedProcess => {
    const s = sel?.selector;
    let p: ManagedProcess | undefined;
    if (s?.case === 'pid') p = d.processes.get(s.value);
    else if (s?.case === 'tag') p = d.processes.byTag(s.value);
    else throw new ConnectError('process selector must name a pid or a tag', Code.Unimplemented);
    if (!p || (p.end && !allowEnded))
      throw new ConnectError(`process with ${s.case} ${String(s.value)} not found`, Code.NotFound);
    return p;
  };
  const wrap = async <T>(fn: () => T | Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw toConnectError(e);
    }
  };

  return {
    async *start(req, ctx) {
      const user = await d.userOf(ctx);
      const cfg = req.process;
      if (!cfg) throw new ConnectError('process config is required', Code.InvalidArgument);
      if (!cfg.cmd) throw new ConnectError('process.cmd is required', Code.InvalidArgument);
      const size = req.pty?.size;
      const p = await wrap(() =>
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
      const events = follow(p, ctx);
      yield { event: { event: { case: 'start', value: { pid: p.pid } } } };
      for await (const event of events) yield { event };
    },

    async *connect(req, ctx) {
      const p = select(req.process, true);
      const events = follow(p, ctx);
      yield { event: { event: { case: 'start', value: { pid: p.pid } } } };
      for await (const event of events) yield { event };
    },

    list() {
      return {
        processes: d.processes.list().map((p) => ({
          pid: p.pid,
          ...(p.tag === undefined ? {} : { tag: p.tag }),
          config: {
            cmd: p.config.cmd,
            args: p.config.args,
            envs: p.config.envs,
            ...(p.config.cwd === undefined ? {} : { cwd: p.config.cwd }),
          },
        })),
      };
    },

    async sendInput(req) {
      const p = select(req.process);
      const input = req.input?.input;
      await wrap(() => {
        if (input?.case === 'stdin') p.writeStdin(input.value);
        else if (input?.case === 'pty') p.writePty(input.value);
        else throw new ConnectError('input must be stdin or pty bytes', Code.InvalidArgument);
      });
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
          const target = p;
          const input = ev.value.input?.input;
          await wrap(() => {
            if (input?.case === 'stdin') target.writeStdin(input.value);
            else if (input?.case === 'pty') target.writePty(input.value);
          });
        }
      }
      return {};
    },

    async closeStdin(req) {
      const p = select(req.process);
      await wrap(() => {
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
      await wrap(() => {
        p.resize(size.cols, size.rows);
      });
      return {};
    },
  };
}
