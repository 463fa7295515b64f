import { copyFile, link, mkdir, rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import type { ArtifactRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { writeFileAtomic } from '../../core/fs-atomic.ts';
import { newId } from '../../core/ids.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import { LEGACY_MACHINE, validateMachine } from '../../vmm/driver.ts';
import { OpRun } from '../journal.ts';
import {
  ARCHIVE_FILES,
  ARCHIVE_FORMAT,
  MANIFEST,
  artifact,
  packArchive,
  unpackArchive,
  type ArchiveManifest,
} from '../snapshot-archive.ts';
import { artifactPath, snapDir, type ServiceContext } from './context.ts';
import { assertSnapshotNameFree } from './queries.ts';
import type { OpCtx } from './types.ts';

/** Snapshot archives: export to one portable file, import (verified) from one. */

/**
 * Writes a snapshot as one portable archive to `out`: memory, device state, the disk
 * flattened to one standalone layer, kernel and initrd, and a manifest with SHA-256s.
 */
export async function exportSnapshot(
  sc: ServiceContext,
  snap: SnapshotRecord,
  out: NodeJS.WritableStream,
  ctx: OpCtx,
): Promise<void> {
  if (snap.kind === 'pause')
    throw new KilnError(
      'invalid_state',
      `snapshot ${snap.id} is a paused sandbox's state; it cannot be exported`,
    );
  const tmp = join(sc.dataDir, 'snapshots', `.staging-export-${newId('x', 12)}`);
  try {
    await mkdir(tmp, { recursive: true });
    const tpl = sc.store.getTemplate(snap.templateId);
    await stageArchiveFiles(sc, snap, tpl, tmp);
    const files: ArtifactRecord[] = [];
    for (const [kind, name] of Object.entries(ARCHIVE_FILES))
      files.push(await artifact(tmp, kind as ArtifactRecord['kind'], name));
    const manifest: ArchiveManifest = {
      format: ARCHIVE_FORMAT,
      snapshot: {
        id: snap.id,
        name: snap.name,
        memoryMiB: snap.memoryMiB,
        vcpus: snap.vcpus,
        guestToken: snap.guestToken,
        machine: snap.machine,
        templateName: tpl.name,
        imageKey: tpl.imageKey,
        createdAt: snap.createdAt,
      },
      files,
    };
    await writeFileAtomic(join(tmp, MANIFEST), JSON.stringify(manifest, null, 2));
    await pipeline(packArchive(tmp), out);
    sc.log.info({ opId: ctx.opId, snapshotId: snap.id }, 'snapshot exported');
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Puts the archive's files in `tmp`: hard links to the immutable ones, the disk as one layer. */
async function stageArchiveFiles(
  sc: ServiceContext,
  snap: SnapshotRecord,
  tpl: TemplateRecord,
  tmp: string,
): Promise<void> {
  const file = (kind: ArtifactRecord['kind']): string | undefined => artifactPath(sc, snap, kind);
  const image = file('kernel') ? undefined : await sc.image(tpl.imageKey);
  const sources: Record<keyof typeof ARCHIVE_FILES, string | undefined> = {
    memory: file('memory'),
    state: file('state'),
    disk: undefined,
    kernel: file('kernel') ?? image?.kernel,
    initrd: file('initrd') ?? image?.initrd,
  };
  for (const [kind, src] of Object.entries(sources)) {
    // A hard link where possible: these files are immutable and can be large.
    const dst = join(tmp, ARCHIVE_FILES[kind as keyof typeof ARCHIVE_FILES]);
    if (src) await link(src, dst).catch(() => copyFile(src, dst));
  }
  // The disk chain (snapshot layers, template layer, base image) as one standalone layer.
  await sc.driver.disks.exportStandalone(file('disk') ?? '', join(tmp, ARCHIVE_FILES.disk));
}

/**
 * Imports an archive written by exportSnapshot (from this or another host): verified entry by
 * entry (names, sizes, SHA-256) before anything is recorded. Keeps the snapshot's id and name;
 * an id or name already here is refused.
 */
export async function importSnapshot(
  sc: ServiceContext,
  input: Readable,
  ctx: OpCtx,
): Promise<SnapshotRecord> {
  const run = new OpRun(sc, 'import', 'archive', ctx.opId);
  try {
    const tmp = join(sc.dataDir, 'snapshots', `.staging-${run.op.id}`);
    await mkdir(tmp, { recursive: true });
    run.step('staging dir', { action: 'remove-path', path: tmp });
    const m = await unpackArchive(input, tmp);
    const id = checkImportedManifest(sc, m);
    // The disk is untrusted input to the VMM: one standalone layer referring to no other file.
    await sc.driver.disks.verifyImported(join(tmp, ARCHIVE_FILES.disk));
    checkImportedToken(m);
    const tpl = importTemplate(sc, run, m);
    await rm(join(tmp, MANIFEST));
    await rename(tmp, snapDir(sc, id));
    run.step('snapshot dir', { action: 'remove-path', path: snapDir(sc, id) });
    const snap: SnapshotRecord = {
      id,
      name: m.snapshot.name,
      kind: 'snapshot',
      sandboxId: null,
      templateId: tpl.id,
      memoryMiB: m.snapshot.memoryMiB,
      vcpus: m.snapshot.vcpus,
      parentId: null,
      artifacts: m.files,
      guestToken: m.snapshot.guestToken,
      pauseMs: null,
      machine: importedMachine(m),
      createdAt: new Date(sc.now()).toISOString(),
      // Imported through the native API: admin keys only.
      ownerKeyId: null,
      deletedAt: null,
    };
    sc.store.insertSnapshot(snap);
    run.step('snapshot record', { action: 'delete-snapshot', snapshotId: id });
    run.done();
    sc.log.info({ opId: ctx.opId, snapshotId: id }, 'snapshot imported');
    return snap;
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}

/** The machine revision an imported snapshot restores on (absent: an archive from before revisions). */
function importedMachine(m: ArchiveManifest): number {
  const v: unknown = m.snapshot.machine;
  validateMachine(v);
  return v ?? LEGACY_MACHINE;
}

/** The manifest's snapshot: valid id, resources and name, neither taken here. Resolves with the id. */
function checkImportedManifest(sc: ServiceContext, m: ArchiveManifest): string {
  const id = validateName('snapshot id', m.snapshot.id);
  importedMachine(m);
  validateMemoryMiB(m.snapshot.memoryMiB);
  validateVcpus(m.snapshot.vcpus);
  if (m.snapshot.name !== null) assertSnapshotNameFree(sc, validateName('name', m.snapshot.name));
  try {
    const here = sc.store.getSnapshot(id);
    throw new KilnError(
      'already_exists',
      here.deletedAt === null
        ? `snapshot ${id} already exists on this host`
        : `snapshot ${id} was deleted here but sandboxes or snapshots still stand on its disk layer; import it again once they are gone`,
    );
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  }
  return id;
}

/** Its agent holds this token until /init replaces it; without one it would obey anyone. */
function checkImportedToken(m: ArchiveManifest): void {
  const guestToken: unknown = m.snapshot.guestToken;
  if (typeof guestToken !== 'string' || !/^[\x21-\x7e]{16,256}$/.test(guestToken))
    throw invalidArgument(
      'archive',
      'the manifest has no usable guestToken (16-256 printable characters): its guest agent would take requests from anyone until /init; export it again from a current kiln',
    );
}

/** The template an imported snapshot's sandboxes are recorded under: this host's of that name, or a new one. */
function importTemplate(sc: ServiceContext, run: OpRun, m: ArchiveManifest): TemplateRecord {
  const tplName = validateName('templateName', m.snapshot.templateName);
  const found = sc.store.listTemplates().find((t) => t.name === tplName);
  if (found) return found;
  // The sandboxes it restores need a template record; the snapshot brings its own boot files.
  const tpl: TemplateRecord = {
    id: newId('tpl'),
    name: tplName,
    imageKey: m.snapshot.imageKey,
    memoryMiB: m.snapshot.memoryMiB,
    vcpus: m.snapshot.vcpus,
    snapshotId: null,
    createdAt: new Date(sc.now()).toISOString(),
    ownerKeyId: null,
  };
  sc.store.putTemplate(tpl);
  run.step('template record', { action: 'delete-template', templateId: tpl.id });
  return tpl;
}
