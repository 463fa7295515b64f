/**
 * The guest images kilnd's cache holds (`<cacheDir>/images/<key>`), for the dashboard's images
 * table: Debian images (`kiln image build`) and those made from OCI images (`kiln image build
 * --from-image`, or a template build's fromImage, whose template is kiln's hidden
 * `kiln-img-<key>`). Each with the names pointing at it, its size on disk and the templates
 * booted from it.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { DashImage } from '../../core/dashboard-types.ts';
import { imagesDir, readManifest } from '../../images/registry.ts';
import type { SandboxService } from '../sandbox-service.ts';
import { seesTemplate, type Caller } from '../scope.ts';
import { duBytes } from './host-usage.ts';

/** An image directory's name: its key (build work dirs are `.tmp-…`, names live in `by-name`). */
const IMAGE_KEY = /^[0-9a-f]{16,64}$/;

/** Image key -> the names (`by-name/<name>.json`) pointing at it. */
async function namesByKey(root: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const files = await readdir(join(root, 'by-name')).catch(() => [] as string[]);
  for (const f of files.filter((x) => x.endsWith('.json')).sort()) {
    try {
      const { key } = JSON.parse(await readFile(join(root, 'by-name', f), 'utf8')) as { key: unknown };
      if (typeof key === 'string') out.set(key, [...(out.get(key) ?? []), f.slice(0, -5)]);
    } catch {
      // A name being rewritten or damaged: the image is listed without it.
    }
  }
  return out;
}

export class ImageCatalog {
  readonly #o: { svc: SandboxService; cacheDir: string };

  constructor(o: { svc: SandboxService; cacheDir: string }) {
    this.#o = o;
  }

  /**
   * The images `caller` may see, newest first: an admin key's or the socket's session every
   * complete image of the cache; a plain key's only those its visible templates are booted from
   * (an image's names and OCI reference may tell of another key's work).
   */
  async list(caller: Caller | undefined): Promise<DashImage[]> {
    const root = imagesDir(this.#o.cacheDir);
    const admin = !caller || caller.admin;
    const templates = this.#o.svc
      .templates()
      .filter((t) => admin || (seesTemplate(caller, t) && !t.name.startsWith('kiln-')));
    const names = await namesByKey(root);
    const out: DashImage[] = [];
    for (const key of await readdir(root).catch(() => [] as string[])) {
      if (!IMAGE_KEY.test(key)) continue;
      const on = templates.filter((t) => t.imageKey === key).map((t) => t.name);
      if (!admin && on.length === 0) continue;
      // Complete images only: the manifest is written last, every file has its recorded size.
      const m = await readManifest(join(root, key)).catch(() => undefined);
      if (!m) continue;
      out.push({
        key,
        names: names.get(key) ?? [],
        source: m.oci ? m.oci.reference : `debian ${m.spec.suite}`,
        digest: m.oci?.digest ?? null,
        kernel: m.kernel.release,
        diskBytes: await duBytes(join(root, key)),
        createdAt: m.createdAt,
        templates: on.sort(),
      });
    }
    return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }
}
