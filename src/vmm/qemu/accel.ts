import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { nullLogger } from '../../core/log.ts';

export type Accel = 'kvm' | 'tcg';
export type AccelChoice = Accel | 'auto';

export interface AccelProbeOpts {
  qemuBinary: string;
  kernel: string;
  initrd: string;
  /** Where the verdict is remembered (per host boot). */
  cacheFile?: string;
  /** How long a KVM guest may take to reach its initramfs (default 8 s). */
  timeoutMs?: number;
  log?: Logger;
}

export interface AccelVerdict {
  accel: Accel;
  reason: string;
}

/** The marker the initramfs prints when booted with `kiln.probe=1` (see images/guest-files). */
export const PROBE_MARKER = 'KILN-PROBE-OK';

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Chooses the accelerator. `kvm`/`tcg` are taken as forced. `auto` uses KVM only when a tiny
 * guest really boots under it in time: on these machines /dev/kvm exists but is a nested "PVM"
 * backend under which a stock kernel runs ~1000x slower, so its presence proves nothing.
 * The verdict is cached per host boot.
 */
export async function resolveAccel(choice: AccelChoice, probe: AccelProbeOpts): Promise<AccelVerdict> {
  if (choice !== 'auto') return { accel: choice, reason: 'forced' };
  if (!kvmUsable()) return { accel: 'tcg', reason: '/dev/kvm is missing or not accessible' };
  const log = probe.log ?? nullLogger;
  const key = bootId();
  if (probe.cacheFile) {
    try {
      const c = JSON.parse(await readFile(probe.cacheFile, 'utf8')) as AccelVerdict & { bootId: string };
      if (c.bootId === key && ['kvm', 'tcg'].includes(c.accel))
        return { accel: c.accel, reason: `${c.reason} (cached)` };
    } catch {
      // no verdict yet
    }
  }
  const timeoutMs = probe.timeoutMs ?? 8000;
  const t0 = Date.now();
  const res = await probeKvm(probe, timeoutMs);
  const verdict: AccelVerdict =
    res === 'ok'
      ? { accel: 'kvm', reason: `a KVM guest reached init in ${Date.now() - t0} ms` }
      : res === 'timeout'
        ? { accel: 'tcg', reason: `a KVM guest did not reach init within ${timeoutMs} ms` }
        : { accel: 'tcg', reason: `QEMU could not run a KVM guest (${res})` };
  log.info({ ...verdict }, 'accelerator probe');
  if (probe.cacheFile) await writeFileAtomic(probe.cacheFile, JSON.stringify({ ...verdict, bootId: key }));
  return verdict;
}

function probeKvm(p: AccelProbeOpts, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const args = [
      '-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '256M', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', p.kernel, '-initrd', p.initrd,
      '-append', 'console=ttyS0 panic=-1 quiet kiln.probe=1',
      '-serial', 'stdio',
    ]; // prettier-ignore
    const child = spawn(p.qemuBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let done = false;
    const finish = (v: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(v);
    };
    const timer = setTimeout(() => {
      finish('timeout');
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes(PROBE_MARKER)) finish('ok');
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => {
      finish(e.message);
    });
    child.on('close', (code) => {
      const firstLine = err.trim().split('\n')[0] ?? '';
      finish(out.includes(PROBE_MARKER) ? 'ok' : `exit ${code}: ${firstLine.slice(0, 200)}`);
    });
  });
}
