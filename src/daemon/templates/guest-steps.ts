/**
 * What a build step does inside the builder sandbox, through its guest agent: RUN as the step's
 * user with the build's env and workdir (output streamed to the build log line by line), COPY
 * from an uploaded build context with owner and mode, and the start + ready commands.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { KilnError } from '../../core/errors.ts';
import type { BuildStep } from '../../core/template-steps.ts';
import type { SandboxService } from '../sandbox-service.ts';

/** The context later steps run in: E2B's defaults are user `user` in /home/user. */
export interface StepContext {
  user: string;
  workdir: string;
  envs: Record<string, string>;
}

export const initialContext = (): StepContext => ({ user: 'user', workdir: '/home/user', envs: {} });

/** Applies an ENV, WORKDIR or USER step to the context (others leave it). */
export function applyContext(c: StepContext, s: BuildStep): void {
  if (s.kind === 'ENV') for (const [k, v] of s.envs) c.envs[k] = v;
  else if (s.kind === 'WORKDIR') c.workdir = posix.resolve(c.workdir, s.path);
  else if (s.kind === 'USER') c.user = s.user;
}

export const shq = (s: string): string => `'${s.replace(/'/g, `'"'"'`)}'`;

/**
 * The first line of kiln's own scripts in a builder: `$B` is kiln's static busybox where the
 * guest has it (every OCI image kiln boots: guestify.ts), so COPY and the workdir need no tools
 * of the image's (a minimal image has no mktemp, tar or cp); else the image's own tools.
 */
const TOOLS = 'B=; if [ -x /opt/kiln/bin/busybox ]; then B=/opt/kiln/bin/busybox; fi';

/** A failed step: its exit code and last output lines go into the build's reason. */
export class StepFailed extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Splits streamed output into lines for the log. */
export function lineSplitter(emit: (line: string) => void): {
  push: (b: Uint8Array) => void;
  end: () => void;
} {
  let rest = '';
  const dec = new TextDecoder();
  return {
    push: (b) => {
      rest += dec.decode(b, { stream: true });
      const lines = rest.split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) emit(l.replace(/\r$/, ''));
    },
    end: () => {
      if (rest) emit(rest);
      rest = '';
    },
  };
}

export class GuestSteps {
  readonly #svc: SandboxService;
  readonly #id: string;
  readonly #out: (line: string, stream: 'stdout' | 'stderr') => void;
  /** The build's cancel: a running command's stream is dropped (the builder is killed after). */
  readonly #signal: AbortSignal | undefined;
  /** Last output lines, for a failure's reason. */
  #tail: string[] = [];

  constructor(
    svc: SandboxService,
    sandboxId: string,
    out: (line: string, stream: 'stdout' | 'stderr') => void,
    signal?: AbortSignal,
  ) {
    this.#svc = svc;
    this.#id = sandboxId;
    this.#out = out;
    this.#signal = signal;
  }

  get tail(): string[] {
    return this.#tail.slice(-20);
  }

  /** Runs `cmd` as `user` in the context's env and workdir; output lines go to the log. */
  async run(cmd: string, c: StepContext, user = c.user, opts: { quiet?: boolean } = {}): Promise<number> {
    this.#tail = [];
    const mk = (stream: 'stdout' | 'stderr') =>
      lineSplitter((l) => {
        this.#tail.push(l);
        if (this.#tail.length > 40) this.#tail.shift();
        if (!opts.quiet) this.#out(l, stream);
      });
    const o = mk('stdout');
    const e = mk('stderr');
    await this.ensureWorkdir(c);
    const r = await this.#svc.exec(this.#id, cmd, {
      user,
      envs: c.envs,
      cwd: c.workdir,
      timeoutMs: 0,
      onStdout: o.push,
      onStderr: e.push,
      ...(this.#signal ? { signal: this.#signal } : {}),
    });
    o.end();
    e.end();
    return r.exitCode;
  }

  /** As root, quietly; throws with the output on failure. */
  async root(cmd: string, what: string): Promise<void> {
    const r = await this.#svc.exec(this.#id, cmd, { user: 'root', cwd: '/', timeoutMs: 0 });
    if (r.exitCode !== 0)
      throw new StepFailed(
        `${what} failed (exit code ${r.exitCode}): ${(r.stderr || r.stdout).trim()}`,
        r.exitCode,
      );
  }

  /** The workdir exists (Docker's WORKDIR makes it), owned by the user when kiln made it. */
  async ensureWorkdir(c: StepContext): Promise<void> {
    const w = shq(c.workdir);
    await this.root(
      `${TOOLS}\n[ -d ${w} ] || { $B mkdir -p ${w} && $B chown ${shq(c.user)}: ${w}; }`,
      `making the workdir ${c.workdir}`,
    );
  }

  /** COPY: the uploaded context into the guest, then `src` of it to `dest` (Docker's rules). */
  async copy(s: Extract<BuildStep, { kind: 'COPY' }>, tarPath: string, c: StepContext): Promise<void> {
    const { sandbox, baseUrl } = await this.#svc.agent(this.#id);
    const size = (await stat(tarPath)).size;
    const guestTar = `/tmp/kiln-ctx-${Date.now().toString(36)}.tar`;
    const res = await fetch(`${baseUrl}/files?path=${encodeURIComponent(guestTar)}&username=root`, {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(size),
        'x-access-token': sandbox.accessToken,
      },
      body: Readable.toWeb(createReadStream(tarPath)),
      duplex: 'half',
    });
    if (!res.ok)
      throw new KilnError(
        'guest_agent_error',
        `uploading the build context failed: ${res.status} ${await res.text()}`,
      );
    const dest = posix.resolve(c.workdir, s.dest);
    const owner = s.user ?? c.user;
    const dirDest = s.dest.endsWith('/');
    const script = [
      'set -e',
      TOOLS,
      `d=$($B mktemp -d)`,
      `$B tar -xf ${shq(guestTar)} -C "$d"`,
      `src="$d"/${shq(s.src.replace(/^\.\/?/, '') || '.')}`,
      `dest=${shq(dest)}`,
      '[ -e "$src" ] || { echo "COPY: ' +
        s.src.replace(/[^\w./ -]/g, '') +
        ' is not in the uploaded context" >&2; exit 1; }',
      // The directories COPY makes belong to the owner too (the topmost one kiln creates).
      'top=""; p="$dest"; while [ ! -e "$p" ]; do top="$p"; p=$($B dirname "$p"); done',
      'if [ -d "$src" ]; then $B mkdir -p "$dest"; $B cp -a "$src"/. "$dest"/; t="$dest";',
      dirDest
        ? 'else $B mkdir -p "$dest"; $B cp -a "$src" "$dest"/; t="$dest"/$($B basename "$src"); fi'
        : 'else $B mkdir -p "$($B dirname "$dest")"; $B cp -a "$src" "$dest"; t="$dest"; fi',
      `$B chown -R ${shq(owner)}: "$t"`,
      `if [ -n "$top" ]; then $B chown -R ${shq(owner)}: "$top"; fi`,
      s.mode !== undefined ? `$B chmod -R ${s.mode.toString(8)} "$t"` : 'true',
      `$B rm -rf "$d" ${shq(guestTar)}`,
    ].join('\n');
    const r = await this.#svc.exec(this.#id, script, { user: 'root', cwd: '/', timeoutMs: 0 });
    if (r.exitCode !== 0)
      throw new StepFailed(
        `COPY ${s.src} ${s.dest} failed (exit code ${r.exitCode}): ${r.stderr.trim()}`,
        r.exitCode,
      );
  }

  /** The build's env for every login shell of the template's sandboxes. */
  async persistEnv(c: StepContext): Promise<void> {
    const lines = Object.entries(c.envs).map(([k, v]) => `export ${k}=${shq(v)}`);
    if (lines.length === 0) return;
    // Shell builtins and kiln's busybox only: an OCI base may lack base64, grep or cat, may
    // have no /etc/profile.d, and may have no /etc/profile or one that does not read profile.d.
    const f = '/etc/profile.d/kiln-template-env.sh';
    await this.root(
      [
        TOOLS,
        `$B mkdir -p /etc/profile.d || exit 1`,
        `printf '%s\\n' ${lines.map(shq).join(' ')} > ${f} || exit 1`,
        `found=; if [ -r /etc/profile ]; then while IFS= read -r l; do case $l in *profile.d*) found=1;; esac; done < /etc/profile; fi`,
        `[ -n "$found" ] || echo '[ -r ${f} ] && . ${f}' >> /etc/profile`,
      ].join('\n'),
      'writing the template environment',
    );
  }

  /** Starts `cmd` in its own session, detached from the agent's command (it keeps running). */
  async start(cmd: string, c: StepContext): Promise<void> {
    const line = `${TOOLS}\n$B setsid /bin/bash -l -c ${shq(cmd)} > /tmp/kiln-start.log 2>&1 < /dev/null &`;
    const code = await this.run(line, c, c.user, { quiet: true });
    if (code !== 0) throw new StepFailed(`the start command could not be started (exit code ${code})`, code);
  }

  /** The start command's output so far (for a failed ready check). */
  async startLog(): Promise<string> {
    const r = await this.#svc.exec(this.#id, `${TOOLS}\n$B tail -n 20 /tmp/kiln-start.log 2>/dev/null`, {
      user: 'root',
      cwd: '/',
      timeoutMs: 10_000,
    });
    return r.stdout.trim();
  }
}
