import { dirname } from 'node:path';
import { stat } from 'node:fs/promises';
import { diskFull } from '../../core/disk-space.ts';
import { KilnError, NO_SPACE_ADVICE } from '../../core/errors.ts';
import { sleep } from '../../core/proc.ts';
import type { OpOpts, SaveStateResult } from '../driver.ts';
import type { QemuVm } from './plan.ts';
import type { QmpClient } from './qmp.ts';

/** Quotes a path for the shell QEMU runs `exec:` migration URIs with. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Loads a saved state into a VM started with `-incoming defer`, then runs it (unless it is to
 * stay paused). With RAM in a file, `x-ignore-shared` makes QEMU take RAM from that file instead
 * of the stream.
 */
export async function restoreState(qmp: QmpClient, vm: QemuVm, opts: OpOpts): Promise<void> {
  const stateFile = vm.incoming?.stateFile ?? '';
  if (vm.memoryFile && !vm.incoming?.ramInStream) {
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
  }
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(stateFile)}` });
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (;;) {
    const st = await qmp.execute<{ status: string; running: boolean }>('query-status');
    if (st.running) return;
    if (st.status === 'paused' || st.status === 'prelaunch') {
      const mig = await qmp.execute<{ status?: string }>('query-migrate');
      if (mig.status === 'failed')
        throw new KilnError('driver_error', `restoring ${stateFile} failed (QEMU migration failed)`);
      if (mig.status === 'completed' || mig.status === undefined) {
        if (!vm.incoming?.stayPaused) await qmp.execute('cont');
        return;
      }
    }
    if (st.status === 'internal-error' || st.status === 'shutdown')
      throw new KilnError('driver_error', `restoring ${stateFile} failed: VM is ${st.status}`);
    if (Date.now() > deadline)
      throw new KilnError('timeout', `restoring ${stateFile} did not finish in time (status ${st.status})`);
    await sleep(5);
  }
}

/**
 * Saves a VM's device state (and its RAM unless its RAM is a shared file) to `stateFile`,
 * stopping the vCPUs first when `running`; they stay stopped.
 */
export async function saveState(
  q: QmpClient,
  o: { id: string; running: boolean; ramShared: boolean; stateFile: string },
  opts: OpOpts,
): Promise<SaveStateResult> {
  const t0 = performance.now();
  if (o.running) await q.execute('stop');
  await q.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: o.ramShared }],
  });
  // The default 128 MiB/s throttle makes a local save several times slower than the disk.
  await q.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 2 ** 30 });
  // The shell QEMU runs has its umask (027 once daemonized): the saved state is private.
  await q.execute('migrate', { uri: `exec:umask 077 && cat > ${shellQuote(o.stateFile)}` });
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const m = await q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (m.status === 'completed') break;
    if (m.status === 'failed' || m.status === 'cancelled') {
      // `cat` dying on ENOSPC reaches QEMU as a broken pipe: look at the disk itself.
      const full = diskFull(dirname(o.stateFile));
      throw new KilnError(
        full ? 'no_space' : 'driver_error',
        `saving VM ${o.id} failed: ${m['error-desc'] ?? m.status}${full ? ` (the disk of ${o.stateFile} is full): ${NO_SPACE_ADVICE}` : ''}`,
      );
    }
    if (Date.now() > deadline) throw new KilnError('timeout', `saving VM ${o.id} did not finish in time`);
    await sleep(2);
  }
  const pauseMs = performance.now() - t0;
  const bytes = (await stat(o.stateFile)).size;
  return { pauseMs, bytes };
}

/** Cancels a save still streaming out (it would stop the VM again when it completes). */
export async function cancelOutgoing(q: QmpClient, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await q.execute<{ status?: string }>('query-migrate');
    if (!m.status || !['setup', 'active', 'pre-switchover', 'device', 'cancelling'].includes(m.status))
      return;
    if (m.status !== 'cancelling') await q.execute('migrate_cancel');
    if (Date.now() > deadline) throw new KilnError('timeout', `VM ${id}: an outgoing save would not stop`);
    await sleep(5);
  }
}
