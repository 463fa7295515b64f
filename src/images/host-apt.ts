import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../core/errors.ts';
import { run } from '../core/exec.ts';
import { downloadShared } from './deb-cache.ts';

/** A concrete Debian package version. */
export interface PackageVersion {
  pkg: string;
  version: string;
}

/** Resolves a (meta-)package to the concrete kernel package and its candidate version. */
export async function resolveKernel(pkg: string, signal?: AbortSignal): Promise<PackageVersion> {
  const lookup = async (): Promise<PackageVersion | undefined> => {
    let name = pkg;
    const deps = await run('apt-cache', ['depends', '--no-recommends', '--no-suggests', pkg], {
      signal,
    }).catch(() => undefined);
    const m = deps && /Depends:\s+(linux-image-\S+)/.exec(deps.stdout);
    if (m?.[1]) name = m[1];
    const pol = await run('apt-cache', ['policy', name], { signal }).catch(() => undefined);
    const v = pol && /Candidate:\s+(\S+)/.exec(pol.stdout);
    if (!v?.[1] || v[1] === '(none)') return undefined;
    return { pkg: name, version: v[1] };
  };
  let found = await lookup();
  if (!found) {
    await run('apt-get', ['update', '-qq'], { failCode: 'image_build_failed', signal });
    found = await lookup();
  }
  if (!found)
    throw new KilnError('image_build_failed', `kernel: no Debian package "${pkg}" is available to apt`);
  return found;
}

/**
 * Downloads a package's .deb into the shared cache `dir` (an existing file is reused). It lands in
 * a private directory first: a concurrent build must not take a half-written file (deb-cache.ts).
 */
export async function downloadDeb(p: PackageVersion, dir: string, signal?: AbortSignal): Promise<string> {
  const name = `${p.pkg}_${p.version.replace(':', '%3a')}_amd64.deb`;
  if (existsSync(join(dir, name))) return join(dir, name);
  return downloadShared(dir, name, async (own) => {
    await run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', `${p.pkg}=${p.version}`], {
      cwd: own,
      failCode: 'image_build_failed',
      signal,
    });
    if (!existsSync(join(own, name)))
      throw new KilnError('image_build_failed', `kernel: apt-get download did not produce ${name}`);
  });
}

/** The host's Debian mirror (from its apt sources), else deb.debian.org. */
export async function detectMirror(): Promise<string> {
  const texts: string[] = [];
  for (const f of ['/etc/apt/sources.list']) texts.push(await readFile(f, 'utf8').catch(() => ''));
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])) {
    texts.push(await readFile(join('/etc/apt/sources.list.d', f), 'utf8').catch(() => ''));
  }
  for (const t of texts) {
    const m =
      /^(?:URIs:|deb)\s+(https?:\/\/\S+\/debian)\/?\s*$/m.exec(t) ??
      /^deb\s+(https?:\/\/\S+\/debian)\/?\s+bookworm\s/m.exec(t);
    if (m?.[1]) return m[1];
  }
  return 'http://deb.debian.org/debian';
}
