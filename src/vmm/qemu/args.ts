import { LEGACY_MACHINE } from '../driver.ts';
import type { QemuVm } from './plan.ts';

export interface QemuArgsOpts {
  accel: 'kvm' | 'tcg';
  /** TCG translation cache in MiB; bounds QEMU's RSS under TCG (default 64). */
  tcgCacheMiB: number;
  /** Host TSC frequency in kHz, passed to the guest kernel (fixes the TCG PIT-calibration hang). */
  tscKhz: number | undefined;
  overlay: string;
  qmpSocket: string;
  serialLog: string;
  pidFile: string;
  /** Detach (QEMU forks, the parent exits once the machine is set up). */
  daemonize: boolean;
  /** The host loopback address the guest ports are forwarded on. */
  forwardHost: string;
}

/**
 * Where guest ports are forwarded on the host: a loopback address of its own (all of 127/8 is
 * local), so that one firewall rule can keep every other local user off guest agents (see
 * agent-guard.ts). Guests cannot reach it: QEMU user-net maps the guest's 10.0.2.2 to host
 * 127.0.0.1 only.
 */
export const FORWARD_HOST = '127.77.0.1';
/** The block the port guard covers (FORWARD_HOST and room for more). */
export const FORWARD_NET = '127.77.0.0/16';

/**
 * The QEMU command line of a kiln microVM. Kept in one place so boot and (later) snapshot
 * restore use the same machine shape: only the overlay, sockets, log and pid paths vary per VM.
 */
export function qemuArgs(spec: QemuVm, o: QemuArgsOpts): string[] {
  const ports = spec.guestPorts;
  const fwd = ports.map((p) => `hostfwd=tcp:${o.forwardHost}:0-:${p}`).join(',');
  const kernelArgs = [
    'console=ttyS0',
    'root=/dev/vda',
    'rw',
    'panic=-1',
    // A panicking kernel resets the machine by a triple fault, which QEMU (-no-reboot) turns into
    // its exit. The kernel's default, the ACPI reset register, must first ioremap it, and a kernel
    // that panicked out of memory (or with interrupts off while that mapping needs them) can hang
    // there for ever or fall through to a BIOS restart that boots the guest again in the same
    // QEMU: kiln would never see it die.
    'reboot=t',
    'quiet',
    ...(o.tscKhz ? [`tsc_early_khz=${o.tscKhz}`] : []),
    // Under TCG the clocksource watchdog finds the emulated TSC skewed against the jiffies it is
    // checked with, marks it unstable and falls back to jiffies: then the guest can never stop
    // its tick (250 wakeups a second, each costing QEMU a translated interrupt path).
    ...(o.accel === 'tcg' ? ['tsc=reliable'] : []),
    // TCG keys translated code by virtual address: with address-space randomisation every new
    // process's libraries and binary land elsewhere, and QEMU translates them again (some 8 MB
    // of its code cache and 100-250 ms per command). Without it they are translated once per
    // VM. Under KVM guests keep ASLR.
    ...(o.accel === 'tcg' ? ['norandmaps'] : []),
    // Fewer wakeups of an idle guest: no soft-lockup watchdog (every 4 s), no proactive memory
    // compaction (every 500 ms), VM statistics folded every 30 s instead of every second, no
    // pressure-stall accounting (its averages are recomputed every 2 s while anything ran).
    'nowatchdog',
    'psi=0',
    'sysctl.vm.compaction_proactiveness=0',
    'sysctl.vm.stat_interval=30',
    // Freed guest memory is zeroed, so that the host's KSM (KILN_KSM=on, ksm.ts) can fold it into
    // the zero page: a sandbox that allocated and freed memory gives it back.
    'init_on_free=1',
    ...(spec.kernelArgs ?? []),
  ];
  const accel =
    o.accel === 'kvm'
      ? ['-accel', 'kvm', '-cpu', 'host']
      : // ARAT (the local APIC timer keeps running in deep idle): without it the guest kernel needs a
        // broadcast timer (microvm has none) to go tickless, and stays on a 250 Hz periodic tick.
        ['-accel', `tcg,tb-size=${o.tcgCacheMiB}`, '-cpu', 'qemu64,+arat'];
  // Save and restore must agree on the machine: RAM backend, size and devices are built here only.
  // Revision 2 has no legacy PIT (driver.ts MACHINE_REVISION); a VM of a record that predates
  // revisions is legacy. The device set is part of the saved state: a restore builds its snapshot's.
  const pit = (spec.machine ?? LEGACY_MACHINE) >= 2 ? ',pit=off' : '';
  const machine = `microvm,x-option-roms=off,rtc=on${pit}${spec.memoryFile ? ',memory-backend=mem' : ''}`;
  const memory = spec.memoryFile
    ? [
        '-object',
        `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${spec.memoryFile.path},share=${spec.memoryFile.share ? 'on' : 'off'}`,
      ]
    : [];
  return [
    '-name',
    `kiln-${spec.id}`,
    '-M',
    machine,
    ...accel,
    '-m',
    `${spec.memoryMiB}M`,
    ...memory,
    '-smp',
    String(spec.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    spec.kernel,
    '-initrd',
    spec.initrd,
    '-append',
    kernelArgs.join(' '),
    '-chardev',
    `file,id=ser0,path=${o.serialLog}`,
    '-serial',
    'chardev:ser0',
    '-drive',
    `id=root,file=${o.overlay},format=qcow2,if=none,discard=unmap`,
    '-device',
    'virtio-blk-device,drive=root',
    '-netdev',
    `user,id=n0${spec.restrict ? ',restrict=on' : ''},${fwd}`,
    '-device',
    'virtio-net-device,netdev=n0',
    '-device',
    'virtio-rng-device',
    '-qmp',
    `unix:${o.qmpSocket},server=on,wait=off`,
    '-pidfile',
    o.pidFile,
    ...(spec.incoming ? ['-incoming', 'defer'] : []),
    ...(o.daemonize ? ['-daemonize'] : []),
  ];
}

/** Parses `info usernet` (HMP) into guest port -> host address and port of the TCP host forwards. */
export function parseUsernetForwards(text: string): Record<number, { addr: string; port: number }> {
  const out: Record<number, { addr: string; port: number }> = {};
  for (const line of text.split(/\r?\n/)) {
    // TCP[HOST_FORWARD]  12      127.77.0.1 39533       10.0.2.15 49983     0     0
    const m = /TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)/.exec(line);
    if (m?.[1] && m[2] && m[3]) out[Number(m[3])] = { addr: m[1], port: Number(m[2]) };
  }
  return out;
}
