import type { Logger } from 'pino';
import type { SandboxCondition, SandboxConditionCode, SandboxRecord } from '../core/domain.ts';
import { KilnError, asKilnError } from '../core/errors.ts';
import type { Store } from '../store/store.ts';
import type { VmInfo, VmmDriver } from '../vmm/driver.ts';
import { CONSOLE_LINES, consoleExcerpt, exitReason, panicLine } from './console.ts';
import type { GuestClient, HttpGuestClientOpts } from './guest-client.ts';

/** The probe period after a failed probe (or probeEveryMs, if shorter). */
export const RETRY_PROBE_EVERY_MS = 5000;

/**
 * An idle guest: its QEMU used less than this share of a core since the last check (an idle TCG
 * guest uses some 0.2%; a probe alone some 10 ms).
 */
export const IDLE_CPU_SHARE = 0.01;

export interface LivenessOpts {
  /**
   * How often each running sandbox's guest agent is probed (GET /health) while it answers.
   * Default 30000 ms: a probe wakes an idle guest (under TCG it costs its QEMU ~40 ms of CPU).
   * After a failed probe the next ones come every min(this, 5000) ms until it answers again.
   */
  probeEveryMs?: number;
  /**
   * How often an idle sandbox's agent is probed (default 300000 ms). Idle: since its agent last
   * answered, nothing reached it through kiln (exec, files, the envd proxy: all pass
   * `assertUsable`), and its QEMU answers and used under IDLE_CPU_SHARE of a core between any
   * two checks. Nothing in such a guest ran that could have hung its agent, and each probe
   * would wake it. At or below probeEveryMs, every sandbox is probed every probeEveryMs.
   */
  idleProbeEveryMs?: number;
  /** How long one probe may take. Default 3000 ms. */
  probeTimeoutMs?: number;
  /** Failed probes in a row before the sandbox is marked `unresponsive`. Default 3. */
  failuresToFlag?: number;
  /**
   * How often kiln asks QEMU to run again a VM it stopped on a full disk (`cont`; the write is
   * retried and the VM stops again if there is still no space). Default 30000 ms; 0 = never.
   */
  diskRetryEveryMs?: number;
}

export interface LivenessDeps {
  store: Store;
  driver: VmmDriver;
  guest: (o: HttpGuestClientOpts) => GuestClient;
  log: Logger;
  now: () => number;
  /** The guest agent's base URL of a VM. */
  agentUrl: (info: VmInfo) => string;
  /** CPU time (ms) a VM's process (by pid) has used, or undefined when it cannot be read. */
  cpuMs?: (pid: number) => number | undefined;
  /** True while an operation (snapshot, pause, kill...) holds the sandbox. */
  isHeld: (id: string) => boolean;
  /** Ends the sandbox with this reason (the service's kill). */
  kill: (id: string, reason: string) => Promise<unknown>;
}

interface Probe {
  /** The VM the cached address belongs to. */
  startedAt: string | null;
  baseUrl: string | undefined;
  /** When the agent was last probed. */
  lastProbeAt: number;
  /** When a probe was last due: probed, or skipped for an idle guest (console checked either way). */
  lastCheckAt: number;
  /**
   * The VM's CPU time (ms) at the last check (after the probe's answer: its own cost is not the
   * guest's work); undefined when unread or the probe failed.
   */
  cpuAtCheck: number | undefined;
  failures: number;
  /** Polls that saw the VM paused without a fault (one may be a snapshot kiln itself took). */
  pausedSeen: number;
  lastDiskRetryAt: number;
  /** The last driver error logged (logged once until it changes). */
  lastVmError: string | undefined;
}

/**
 * The liveness watcher: per running sandbox, the VM process (the driver's status), QEMU's run
 * state (stopped on a full disk?) and the guest agent (/health). A VM that is positively gone is
 * ended with the reason its console gives; a VM whose state cannot be read (host errors) is left
 * alone and checked again; what is wrong but not fatal is the sandbox's `condition`, which exec
 * and the envd proxy turn into a clear error at once. Sandboxes are checked concurrently and a
 * slow one (a hung QEMU) never delays the others.
 */
export class LivenessWatcher {
  readonly #d: LivenessDeps;
  readonly #o: Required<LivenessOpts>;
  readonly #probes = new Map<string, Probe>();
  readonly #inflight = new Set<string>();
  /** A re-probe in progress per sandbox (exec and the proxy share it). */
  readonly #reprobes = new Map<string, Promise<boolean>>();
  /** When kiln last went to talk to each sandbox's agent (`assertUsable`). */
  readonly #usedAt = new Map<string, number>();
  /**
   * What the watcher last saw per running sandbox (null: nothing wrong). It is the truth while
   * kilnd runs; the store's copy is best effort, because the condition that matters most (a full
   * state disk) is the one in which the store cannot be written.
   */
  readonly #seen = new Map<string, SandboxCondition | null>();

  /** The sandbox's condition as last seen (the record's own when the watcher has seen none yet). */
  conditionOf(s: SandboxRecord): SandboxCondition | null {
    return this.#seen.has(s.id) ? (this.#seen.get(s.id) ?? null) : s.condition;
  }

  constructor(deps: LivenessDeps, opts: LivenessOpts = {}) {
    this.#d = deps;
    this.#o = {
      probeEveryMs: opts.probeEveryMs ?? 30_000,
      idleProbeEveryMs: opts.idleProbeEveryMs ?? 300_000,
      probeTimeoutMs: opts.probeTimeoutMs ?? 3000,
      failuresToFlag: opts.failuresToFlag ?? 3,
      diskRetryEveryMs: opts.diskRetryEveryMs ?? 30_000,
    };
  }

  /**
   * Checks every running sandbox not already being checked and not held by an operation;
   * resolves with the ids of those it found dead (and ended).
   */
  async check(): Promise<string[]> {
    // A paused sandbox has no VM: what was wrong with the one it had is over.
    for (const s of this.#d.store.listSandboxes({ states: ['paused'] }, { limit: 1000 }).items)
      if (s.condition && !this.#d.isHeld(s.id)) this.#clear(s, 'the sandbox is paused (its VM is gone)');
    const running = this.#d.store.listSandboxes({ states: ['running'] }, { limit: 1000 }).items;
    const ids = new Set(running.map((s) => s.id));
    for (const id of this.#probes.keys()) if (!ids.has(id)) this.#probes.delete(id);
    for (const id of this.#seen.keys()) if (!ids.has(id)) this.#seen.delete(id);
    for (const id of this.#usedAt.keys()) if (!ids.has(id)) this.#usedAt.delete(id);
    const checks = running
      .filter((s) => !this.#inflight.has(s.id) && !this.#d.isHeld(s.id))
      .map(async (s) => {
        this.#inflight.add(s.id);
        try {
          return await this.#checkOne(s);
        } catch (e) {
          this.#d.log.warn({ err: e, sandboxId: s.id }, 'liveness check failed');
          return false;
        } finally {
          this.#inflight.delete(s.id);
        }
      });
    const dead = await Promise.all(checks);
    return running.filter((_, i) => dead[i]).map((s) => s.id);
  }

  #probe(s: SandboxRecord): Probe {
    let p = this.#probes.get(s.id);
    if (!p || p.startedAt !== s.startedAt) {
      p = {
        startedAt: s.startedAt,
        baseUrl: undefined,
        lastProbeAt: 0,
        lastCheckAt: 0,
        cpuAtCheck: undefined,
        failures: 0,
        pausedSeen: 0,
        lastDiskRetryAt: this.#d.now(),
        lastVmError: undefined,
      };
      this.#probes.set(s.id, p);
    }
    return p;
  }

  /** True when the sandbox was found dead and ended. */
  async #checkOne(s: SandboxRecord): Promise<boolean> {
    const p = this.#probe(s);
    let info: VmInfo | undefined;
    let vmError: KilnError | undefined;
    try {
      info = await this.#d.driver.status(s.id);
      p.lastVmError = undefined;
    } catch (e) {
      const k = asKilnError(e);
      // Not found is an observation: the VM's record is gone (its process, if any, is killed).
      if (k.code === 'not_found') return this.#end(s, `vm lost: ${k.message}`, []);
      // Anything else (EMFILE, a QMP timeout) says nothing about the VM: look again later.
      vmError = k;
      if (p.lastVmError !== k.message)
        this.#d.log.warn({ err: k, sandboxId: s.id }, 'cannot read the VM state; will retry');
      p.lastVmError = k.message;
    }
    if (info?.state === 'stopped') {
      const lines = await this.#d.driver.consoleTail(s.id, CONSOLE_LINES).catch((e: unknown) => {
        this.#d.log.warn({ err: e, sandboxId: s.id }, 'cannot read the console of a VM that exited');
        return [] as string[];
      });
      return this.#end(s, exitReason(lines), lines);
    }
    if (info?.state === 'paused') {
      await this.#paused(s, info, p);
      return false;
    }
    p.pausedSeen = 0;
    if (info) {
      p.baseUrl = this.#d.agentUrl(info);
      // The VM runs again: a condition about its stopped vCPUs is over.
      const c = this.conditionOf(s);
      if (c && c.code !== 'unresponsive') this.#clear(s, 'the VM runs again');
    }
    const every =
      p.failures > 0 ? Math.min(this.#o.probeEveryMs, RETRY_PROBE_EVERY_MS) : this.#o.probeEveryMs;
    if (this.#d.now() - p.lastCheckAt < every || !p.baseUrl) return false;
    const idle = info !== undefined && this.#idle(s.id, p, info);
    p.lastCheckAt = this.#d.now();
    let answered = true;
    if (!idle) p.lastProbeAt = this.#d.now();
    try {
      if (!idle) await this.#d.guest({ baseUrl: p.baseUrl }).health(this.#o.probeTimeoutMs);
    } catch (e) {
      answered = false;
      p.failures++;
      if (p.failures >= this.#o.failuresToFlag) {
        this.#set(
          s,
          'unresponsive',
          `its guest agent has not answered /health ${p.failures} times in a row (${(e as Error).message})` +
            (vmError ? `; QEMU does not answer either (${vmError.message})` : '') +
            '; the guest may be overloaded or hung: wait, or kill it',
        );
      }
    }
    // A kernel that panicked is dead even when its VM did not exit: a reset that hung, or a
    // restart that boots the guest again inside the same QEMU, whose agent may even answer.
    // The console says so; what the guest ran is gone either way.
    const lines = await this.#d.driver.consoleTail(s.id, CONSOLE_LINES).catch(() => [] as string[]);
    if (lines.some(panicLine))
      return this.#end(s, exitReason(lines), lines, 'its VM had not exited: kiln ended it');
    p.cpuAtCheck = answered && info ? this.#d.cpuMs?.(info.pid) : undefined;
    if (answered) {
      p.failures = 0;
      if (this.conditionOf(s)?.code === 'unresponsive') this.#clear(s, 'the guest agent answers again');
    }
    return false;
  }

  /**
   * True when the sandbox's due probe may wait (see `idleProbeEveryMs`): its agent answered the
   * last one, less than idleProbeEveryMs ago; kiln has not gone to it since; and its QEMU (which
   * just answered the driver) used under IDLE_CPU_SHARE of a core since the last check. Every
   * interval since the answer was so: one that was not brought a probe. The console is read
   * either way, so a panicked guest is found as soon as before.
   */
  #idle(id: string, p: Probe, info: VmInfo): boolean {
    const now = this.#d.now();
    if (p.failures > 0 || p.cpuAtCheck === undefined || now - p.lastProbeAt >= this.#o.idleProbeEveryMs)
      return false;
    if ((this.#usedAt.get(id) ?? -Infinity) >= p.lastProbeAt) return false;
    const cpu = this.#d.cpuMs?.(info.pid);
    return cpu !== undefined && cpu - p.cpuAtCheck < IDLE_CPU_SHARE * (now - p.lastCheckAt);
  }

  /** QEMU says the vCPUs are stopped though the sandbox should run. */
  async #paused(s: SandboxRecord, info: VmInfo, p: Probe): Promise<void> {
    const fault = info.fault;
    if (fault?.kind === 'io_error') {
      if (!fault.nospace) {
        this.#set(s, 'vm_stopped', `${fault.message}; kill the sandbox`);
        return;
      }
      const retry = this.#o.diskRetryEveryMs;
      this.#set(
        s,
        'disk_full',
        `the host has no space left for this sandbox's disk: ${fault.message}; free space on kiln's state disk` +
          (retry > 0 ? ` (kiln resumes the VM by itself, trying every ${Math.round(retry / 1000)} s)` : ''),
      );
      if (retry > 0 && this.#d.now() - p.lastDiskRetryAt >= retry) {
        p.lastDiskRetryAt = this.#d.now();
        // `cont` retries the failed write; with no space yet, QEMU stops the VM again.
        try {
          await this.#d.driver.resume(s.id);
          this.#d.log.info({ sandboxId: s.id }, 'resumed a VM stopped on a full disk');
        } catch (e) {
          this.#d.log.warn({ err: e, sandboxId: s.id }, 'resuming a VM stopped on a full disk failed');
        }
      }
      return;
    }
    // Kiln's own snapshots pause the VM under the sandbox's lock; a pause seen twice with no lock
    // held is not kiln's.
    if (++p.pausedSeen < 2) return;
    this.#set(
      s,
      'vm_stopped',
      'QEMU reports the VM paused although the sandbox should run (paused outside kiln?); kill the sandbox, or resume the VM over QMP',
    );
  }

  #set(s: SandboxRecord, code: SandboxConditionCode, message: string): void {
    if (this.conditionOf(s)?.code === code) return;
    // An operation that took the sandbox in the meantime owns its state.
    if (this.#d.isHeld(s.id)) return;
    const condition: SandboxCondition = { code, message, since: new Date(this.#d.now()).toISOString() };
    this.#seen.set(s.id, condition);
    this.#d.log.warn({ sandboxId: s.id, condition }, 'sandbox condition');
    this.#persist(s.id, condition, () => {
      this.#d.store.appendEvent(s.id, 'warn', `sandbox ${code.replace('_', ' ')}: ${message}`, { condition });
    });
  }

  #clear(s: SandboxRecord, why: string): void {
    const was = this.conditionOf(s);
    if (!was) return;
    this.#seen.set(s.id, null);
    this.#d.log.info({ sandboxId: s.id, was: was.code }, 'sandbox condition cleared');
    this.#persist(s.id, null, () => {
      this.#d.store.appendEvent(s.id, 'info', `sandbox ${was.code.replace('_', ' ')} no more: ${why}`);
    });
  }

  /** Records a condition in the store, best effort: a full disk must not hide it (see #seen). */
  #persist(id: string, condition: SandboxCondition | null, event: () => void): void {
    try {
      // A condition is set on running sandboxes only; one is cleared whatever the state.
      this.#d.store.updateSandbox(id, { condition }, condition ? ['running'] : undefined);
      event();
    } catch (e) {
      const k = asKilnError(e);
      if (k.code === 'invalid_state') {
        this.#seen.delete(id); // no longer running: its record says what happened
        return;
      }
      this.#d.log.warn({ err: k, sandboxId: id }, 'cannot record the sandbox condition; kept in memory');
    }
  }

  async #end(s: SandboxRecord, reason: string, consoleLines: string[], note?: string): Promise<boolean> {
    const data = {
      ...(consoleLines.length ? { console: consoleExcerpt(consoleLines) } : {}),
      ...(note ? { note } : {}),
    };
    this.#d.store.appendEvent(s.id, 'warn', reason, Object.keys(data).length ? data : undefined);
    try {
      await this.#d.kill(s.id, reason);
      return true;
    } catch (e) {
      this.#d.log.warn({ err: e, sandboxId: s.id }, 'ending a sandbox whose VM is gone failed');
      return false;
    }
  }

  /**
   * Fails fast, with what is wrong, when a running sandbox has a condition; exec and the envd
   * proxy call it before talking to the guest (so the watcher knows the agent is in use). An
   * `unresponsive` sandbox is probed once more (shared by concurrent callers): if it answers
   * now, the condition is cleared and the call goes on.
   */
  async assertUsable(s: SandboxRecord, baseUrl: string): Promise<void> {
    this.#usedAt.set(s.id, this.#d.now());
    const c = this.conditionOf(s);
    if (!c) return;
    const details = { sandboxId: s.id, condition: c };
    if (c.code === 'unresponsive') {
      let p = this.#reprobes.get(s.id);
      if (!p) {
        p = this.#d
          .guest({ baseUrl })
          .health(this.#o.probeTimeoutMs)
          .then(
            () => true,
            () => false,
          )
          .finally(() => this.#reprobes.delete(s.id));
        this.#reprobes.set(s.id, p);
      }
      if (await p) {
        this.#clear(s, 'the guest agent answers again');
        return;
      }
      throw new KilnError(
        'guest_agent_error',
        `sandbox ${s.id} is not responding (since ${c.since}): ${c.message}`,
        { details },
      );
    }
    if (c.code === 'disk_full')
      throw new KilnError('no_space', `sandbox ${s.id} is stopped (since ${c.since}): ${c.message}`, {
        details,
      });
    throw new KilnError('invalid_state', `sandbox ${s.id}'s VM is stopped (since ${c.since}): ${c.message}`, {
      details,
    });
  }
}
