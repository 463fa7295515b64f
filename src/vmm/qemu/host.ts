import { readFileSync } from 'node:fs';

/**
 * The host TSC frequency in kHz, or undefined when it cannot be read. Under TCG the guest's TSC
 * runs at the host's rate; telling the guest kernel (`tsc_early_khz=`) avoids the boot hang after
 * "tsc: Unable to calibrate against PIT" measured on these machines (see DESIGN.md).
 */
export function hostTscKhz(): number | undefined {
  try {
    const v = Number(readFileSync('/sys/devices/system/cpu/cpu0/tsc_freq_khz', 'utf8').trim());
    if (Number.isFinite(v) && v > 0) return Math.round(v);
  } catch {
    // not exposed on this kernel; fall back to /proc/cpuinfo
  }
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return Math.round(Number(m[1]) * 1000);
  } catch {
    // no /proc: leave it to the guest kernel
  }
  return undefined;
}

/** Total host memory in MiB. */
export function hostMemoryMiB(): number {
  const m = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m?.[1] ? Math.floor(Number(m[1]) / 1024) : 0;
}
