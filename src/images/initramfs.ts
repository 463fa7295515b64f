import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import type { UnpackedKernel } from './kernel.ts';
import { BUSYBOX } from './preflight.ts';

interface ModuleRef {
  name: string;
  path: string;
}

/**
 * Builds `workDir/initrd.img`: static busybox, the wanted kernel modules (and what they depend
 * on, in load order) and `init`. Returns the modules' names in the order init loads them.
 */
export async function makeInitramfs(
  kernel: UnpackedKernel,
  o: { workDir: string; modules: string[]; init: string; signal?: AbortSignal | undefined },
): Promise<string[]> {
  const modDir = join(kernel.root, 'lib', 'modules', kernel.release);
  // Debian's kernel package leaves modules.dep to depmod at install time: make it here.
  await run('depmod', ['-b', kernel.root, kernel.release], {
    failCode: 'image_build_failed',
    signal: o.signal,
  });
  const order = await moduleLoadOrder(modDir, o.modules);
  const iroot = join(o.workDir, 'initramfs-root');
  await mkdir(join(iroot, 'bin'), { recursive: true });
  await mkdir(join(iroot, 'modules'));
  await copyFile(BUSYBOX, join(iroot, 'bin', 'busybox'));
  await chmod(join(iroot, 'bin', 'busybox'), 0o755);
  for (const m of order)
    await installModule(join(modDir, m.path), join(iroot, 'modules', `${m.name}.ko`), o.signal);
  await writeFile(join(iroot, 'modules.order'), order.map((m) => m.name).join('\n') + '\n');
  await writeFile(join(iroot, 'init'), o.init, { mode: 0o755 });
  await run(
    'sh',
    [
      '-c',
      'cd "$1" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6 > "$2"',
      'sh',
      iroot,
      join(o.workDir, 'initrd.img'),
    ],
    { failCode: 'image_build_failed', signal: o.signal },
  );
  return order.map((m) => m.name);
}

/** Reads modules.dep and returns the wanted modules plus dependencies, dependencies first. */
export async function moduleLoadOrder(modDir: string, wanted: string[]): Promise<ModuleRef[]> {
  const dep = await readFile(join(modDir, 'modules.dep'), 'utf8');
  const norm = (n: string): string => n.replace(/-/g, '_');
  const modName = (p: string): string => basename(p).replace(/\.ko(\.(xz|zst|gz))?$/, '');
  const graph = new Map<string, { path: string; deps: string[] }>();
  for (const line of dep.split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod || rest === undefined) continue;
    graph.set(norm(modName(mod)), {
      path: mod,
      deps: rest
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((d) => norm(modName(d))),
    });
  }
  const out: ModuleRef[] = [];
  const seen = new Set<string>();
  const visit = (n: string): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const node = graph.get(n);
    if (!node) return; // built into the kernel
    for (const d of [...node.deps].reverse()) visit(d);
    out.push({ name: modName(node.path), path: node.path });
  };
  for (const w of wanted) {
    if (!graph.has(norm(w))) {
      // Built-in modules are listed in modules.builtin; anything else is a typo.
      const builtin = await readFile(join(modDir, 'modules.builtin'), 'utf8').catch(() => '');
      if (!builtin.split('\n').some((l) => norm(modName(l)) === norm(w))) {
        throw new KilnError(
          'image_build_failed',
          `initramfs: kernel module "${w}" does not exist in this kernel`,
        );
      }
    }
    visit(norm(w));
  }
  return out;
}

async function installModule(src: string, dst: string, signal?: AbortSignal): Promise<void> {
  if (src.endsWith('.ko')) {
    await copyFile(src, dst);
    return;
  }
  const tool = src.endsWith('.xz') ? 'xz' : src.endsWith('.zst') ? 'zstd' : 'gzip';
  await run('sh', ['-c', `${tool} -dc "$1" > "$2"`, 'sh', src, dst], {
    failCode: 'image_build_failed',
    signal,
  });
}
