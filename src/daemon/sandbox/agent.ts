import type { SandboxRecord } from '../../core/domain.ts';
import { KilnError } from '../../core/errors.ts';
import { validatePublishedPort } from '../../core/validate.ts';
import type { ExecOpts, ExecResult, GuestClient, GuestMetrics } from '../guest-client.ts';
import type { ServiceContext } from './context.ts';
import { getSandbox } from './queries.ts';
import type { OpCtx } from './types.ts';
import { agentPort } from './vm.ts';

/**
 * Where a running sandbox's guest agent answers (`http://<host>:<forwarded port>`), for the
 * envd proxy. The port is cached per VM; `forgetAgent` drops it when a connection fails.
 * `not_found` for an unknown sandbox, `invalid_state` for one that is not running.
 */
export async function agent(
  sc: ServiceContext,
  id: string,
): Promise<{ sandbox: SandboxRecord; baseUrl: string }> {
  const s = getSandbox(sc, id);
  if (s.state !== 'running') {
    sc.agentPorts.delete(id);
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}`, {
      details: { sandboxId: id, state: s.state },
    });
  }
  let c = sc.agentPorts.get(id);
  if (!c || c.startedAt !== s.startedAt) {
    const info = await sc.driver.status(id);
    const port = agentPort(info);
    if (info.state === 'stopped' || !port)
      throw new KilnError('invalid_state', `sandbox ${id} has no running VM`, {
        details: { sandboxId: id, state: 'dead' },
      });
    c = { host: info.agent.host, port, startedAt: s.startedAt };
    sc.agentPorts.set(id, c);
  }
  const baseUrl = `http://${c.host}:${c.port}`;
  // A sandbox marked unresponsive or stopped fails now, with why, instead of hanging the caller.
  await sc.watcher.assertUsable(s, baseUrl);
  return { sandbox: s, baseUrl };
}

/**
 * Where the host reaches guest TCP port `guestPort` of a running sandbox (`http://<host>:<port>`),
 * for the envd proxy's published ports: the driver forwards it on first use (a resumed or
 * restored VM gets a new forward). Errors as `agent`; `invalid_argument` for a port that cannot
 * be published (the agent's own among them).
 */
export async function guestPortUrl(
  sc: ServiceContext,
  id: string,
  guestPort: number,
): Promise<{ sandbox: SandboxRecord; baseUrl: string }> {
  validatePublishedPort('port', guestPort);
  const { sandbox } = await agent(sc, id);
  const ep = await sc.driver.exposePort(id, guestPort);
  return { sandbox, baseUrl: `http://${ep.host}:${ep.port}` };
}

/** A guest client of a running sandbox's agent, carrying the request's op id. */
export async function guestOf(sc: ServiceContext, id: string, ctx: OpCtx): Promise<GuestClient> {
  const { sandbox, baseUrl } = await agent(sc, id);
  return sc.guest({ baseUrl, accessToken: sandbox.accessToken, ...(ctx.opId ? { opId: ctx.opId } : {}) });
}

export async function exec(
  sc: ServiceContext,
  id: string,
  cmd: string,
  opts: ExecOpts,
  ctx: OpCtx,
): Promise<ExecResult> {
  const s = getSandbox(sc, id);
  if (s.state !== 'running')
    throw new KilnError('invalid_state', `sandbox ${id} is ${s.state}; exec needs running`);
  // The cached agent address: a hung QEMU does not answer the driver either.
  return (await guestOf(sc, id, ctx)).exec(cmd, opts);
}

/**
 * Streams `input` to the stdin of process `pid` of a running sandbox (an exec started with
 * `stdin: true`) and closes it at the end; `ended` when the command went away first.
 */
export async function writeStdin(
  sc: ServiceContext,
  id: string,
  pid: number,
  input: AsyncIterable<Uint8Array>,
  o: { signal?: AbortSignal },
  ctx: OpCtx,
): Promise<{ ended: boolean }> {
  return (await guestOf(sc, id, ctx)).writeStdin(pid, input, o);
}

/**
 * Sets the default user and working directory of the sandbox's later commands and file
 * operations (envd's /init `defaultUser` / `defaultWorkdir`, as E2B's orchestrator sends a
 * template's). They live in the guest agent, so a snapshot of the sandbox carries them.
 */
export async function setGuestDefaults(
  sc: ServiceContext,
  id: string,
  d: { user?: string | undefined; workdir?: string | undefined },
  ctx: OpCtx,
): Promise<void> {
  const g = await guestOf(sc, id, ctx);
  const token = getSandbox(sc, id).accessToken;
  await g.init(
    {
      accessToken: token,
      ...(d.user ? { defaultUser: d.user } : {}),
      ...(d.workdir ? { defaultWorkdir: d.workdir } : {}),
      timestamp: new Date(sc.now()).toISOString(),
    },
    token,
  );
}

/** The guest's own CPU, memory and disk figures (envd's /metrics) of a running sandbox. */
export async function guestMetrics(sc: ServiceContext, id: string, ctx: OpCtx): Promise<GuestMetrics> {
  return (await guestOf(sc, id, ctx)).metrics();
}
