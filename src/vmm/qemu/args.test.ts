import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LEGACY_MACHINE, MACHINE_REVISION, type VmSpec } from '../driver.ts';
import { parseUsernetForwards, qemuArgs } from './args.ts';
import { planVm } from './plan.ts';

const neutral: VmSpec = {
  id: 'vm-1',
  boot: { kernel: '/i/vmlinuz', initrd: '/i/initrd.img', rootfs: '/i/rootfs.ext4' },
  resources: { memoryMiB: 256, vcpus: 1 },
  network: { kind: 'open' },
};
const spec = planVm(neutral);
const base = {
  tcgCacheMiB: 64,
  tscKhz: 2445404,
  overlay: '/r/vm-1/overlay.qcow2',
  qmpSocket: '/r/vm-1/qmp.sock',
  serialLog: '/r/vm-1/serial.log',
  pidFile: '/r/vm-1/qemu.pid',
  daemonize: true,
  forwardHost: '127.77.0.1',
};
const after = (args: string[], flag: string): string[] =>
  args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ''] : []));

test('a TCG microvm with a bounded code cache, the TSC fix and a race-free agent forward', () => {
  const a = qemuArgs(spec, { ...base, accel: 'tcg' });
  // The newest machine has no legacy PIT (its idle timer woke QEMU 36 times a second).
  assert.deepEqual(after(a, '-M'), ['microvm,x-option-roms=off,rtc=on,pit=off']);
  assert.deepEqual(after(a, '-accel'), ['tcg,tb-size=64']);
  assert.match(after(a, '-append')[0] ?? '', /tsc_early_khz=2445404/);
  // A tickless idle guest: a TSC clocksource the watchdog keeps, a local APIC timer with ARAT.
  assert.match(after(a, '-append')[0] ?? '', /(^| )tsc=reliable( |$)/);
  // Translated code is reused across processes: same addresses in every one.
  assert.match(after(a, '-append')[0] ?? '', /(^| )norandmaps( |$)/);
  assert.deepEqual(after(a, '-cpu'), ['qemu64,+arat']);
  // No periodic guest work without a user; freed memory zeroed (KSM gives it back to the host).
  for (const arg of [
    'nowatchdog',
    'psi=0',
    'sysctl.vm.compaction_proactiveness=0',
    'sysctl.vm.stat_interval=30',
    'init_on_free=1',
    // A panic ends QEMU: the reset is a triple fault, which needs no memory (-no-reboot: exit).
    'panic=-1',
    'reboot=t',
  ])
    assert.ok(after(a, '-append')[0]?.split(' ').includes(arg), arg);
  assert.match(after(a, '-append')[0] ?? '', /root=\/dev\/vda/);
  // Forwarded on kiln's own loopback address, which the port guard keeps to kilnd's uid.
  assert.deepEqual(after(a, '-netdev'), ['user,id=n0,hostfwd=tcp:127.77.0.1:0-:49983']);
  assert.deepEqual(after(a, '-m'), ['256M']);
  assert.ok(a.includes('-daemonize') && a.includes('-no-reboot') && a.includes('-nodefaults'));
  assert.deepEqual(after(a, '-drive'), [
    'id=root,file=/r/vm-1/overlay.qcow2,format=qcow2,if=none,discard=unmap',
  ]);
  assert.ok(!a.join(' ').includes('rootfs.ext4'), 'the base image is only reached through the overlay');
});

test('a restore builds the machine its snapshot was saved from: the legacy one keeps the PIT', () => {
  const legacy = planVm({ ...neutral, machine: LEGACY_MACHINE });
  assert.equal(legacy.machine, 1);
  assert.deepEqual(after(qemuArgs(legacy, { ...base, accel: 'tcg' }), '-M'), [
    'microvm,x-option-roms=off,rtc=on',
  ]);
  assert.equal(planVm(neutral).machine, MACHINE_REVISION);
  // A record written by a kilnd from before revisions has no `machine`: its VM is legacy.
  const old = { ...spec };
  delete old.machine;
  assert.deepEqual(after(qemuArgs(old, { ...base, accel: 'tcg' }), '-M'), [
    'microvm,x-option-roms=off,rtc=on',
  ]);
});

test('KVM uses the host CPU; a restricted network and extra ports reach the netdev', () => {
  const a = qemuArgs(planVm({ ...neutral, network: { kind: 'restricted', guestPorts: [8080, 49983] } }), {
    ...base,
    accel: 'kvm',
    tscKhz: undefined,
  });
  assert.deepEqual(after(a, '-accel'), ['kvm']);
  assert.deepEqual(after(a, '-cpu'), ['host']);
  assert.deepEqual(after(a, '-netdev'), [
    'user,id=n0,restrict=on,hostfwd=tcp:127.77.0.1:0-:49983,hostfwd=tcp:127.77.0.1:0-:8080',
  ]);
  assert.doesNotMatch(after(a, '-append')[0] ?? '', /tsc_early_khz|tsc=reliable|norandmaps/);
});

test('parses the host forwards (address and port) out of `info usernet`', () => {
  const text =
    'Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n' +
    '  TCP[HOST_FORWARD]  12      127.77.0.1 39533       10.0.2.15 49983     0     0\r\n' +
    '  TCP[HOST_FORWARD]  13       127.0.0.1 40001       10.0.2.15  8080     0     0\r\n' +
    '  TCP[ESTABLISHED]   14      127.77.0.1 50000       10.0.2.15 49983     0     0\r\n';
  assert.deepEqual(parseUsernetForwards(text), {
    49983: { addr: '127.77.0.1', port: 39533 },
    8080: { addr: '127.0.0.1', port: 40001 },
  });
  assert.deepEqual(parseUsernetForwards(''), {});
});

test('a neutral spec in QEMU terms: raw rootfs or qcow2 layer, RAM file shared or copy-on-write, restore', () => {
  assert.deepEqual(spec.backing, { path: '/i/rootfs.ext4', format: 'raw' });
  assert.equal(spec.memoryFile, undefined);
  assert.equal(spec.incoming, undefined);
  assert.equal(spec.restrict, false);
  // A template build: RAM in a shared file.
  assert.deepEqual(planVm({ ...neutral, ramFile: '/s/memory' }).memoryFile, {
    path: '/s/memory',
    share: true,
  });
  // A restore of a snapshot with its RAM in a file: mapped privately, RAM not in the stream.
  const r = planVm({
    ...neutral,
    diskLayer: '/s/disk.qcow2',
    restore: { snapshot: { stateFile: '/s/state', ramFile: '/s/memory' } },
  });
  assert.deepEqual(r.backing, { path: '/s/disk.qcow2', format: 'qcow2' });
  assert.deepEqual(r.memoryFile, { path: '/s/memory', share: false });
  assert.deepEqual(r.incoming, { stateFile: '/s/state', ramInStream: false, stayPaused: false });
  // A full state (RAM in the stream) loaded into a new shared RAM file, staying paused.
  const c = planVm({
    ...neutral,
    ramFile: '/s/memory',
    restore: { snapshot: { stateFile: '/s/full' }, paused: true },
  });
  assert.deepEqual(c.memoryFile, { path: '/s/memory', share: true });
  assert.deepEqual(c.incoming, { stateFile: '/s/full', ramInStream: true, stayPaused: true });
  assert.ok(qemuArgs(c, { ...base, accel: 'tcg' }).includes('-incoming'));
});
