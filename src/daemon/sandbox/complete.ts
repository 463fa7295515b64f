import { existsSync } from 'node:fs';
import { copyFile, link, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactRecord, SnapshotRecord } from '../../core/domain.ts';
import { ARCHIVE_FILES, artifact } from '../snapshot-archive.ts';
import { snapDir, type ServiceContext } from './context.ts';
import { CLOSED_EGRESS } from '../networks.ts';
import { LEGACY_MACHINE } from '../../vmm/driver.ts';
import { killVm, startVm } from './vm.ts';
import { DISK_LAYER, FULL_STATE, snapshotArtifacts, type SnapshotMeta } from './snapshot-files.ts';

/** A boot file (kernel, initrd) a snapshot keeps from the imported snapshot it descends from. */
interface Carried {
  kind: 'kernel' | 'initrd';
  from: string;
  path: string;
}

/**
 * The completion step of a snapshot, pause or fork: turns a snapshot directory holding the full
 * saved state (device state + RAM) and the frozen disk into a restorable snapshot: RAM moved
 * into a memory file, small device state, hashes, the record. Idempotent: recovery's
 * roll-forward re-runs it for a snapshot a crash interrupted past its point of no return.
 */
export async function completeSnapshot(sc: ServiceContext, meta: SnapshotMeta): Promise<SnapshotRecord> {
  const dir = snapDir(sc, meta.id);
  const existing = sc.store
    .listSnapshots({ sandboxId: meta.sandboxId ?? undefined })
    .find((x) => x.id === meta.id);
  if (existing) return existing;
  const carried = await carryBootFiles(sc, meta, dir);
  if (existsSync(join(dir, FULL_STATE))) await moveRamToMemoryFile(sc, meta, dir, carried);
  const artifacts: ArtifactRecord[] = await snapshotArtifacts(dir, meta.filesystemOnly === true);
  for (const c of carried) artifacts.push(await artifact(dir, c.kind, c.path));
  const snap: SnapshotRecord = {
    id: meta.id,
    name: meta.name,
    kind: meta.kind,
    sandboxId: meta.sandboxId,
    templateId: meta.templateId,
    memoryMiB: meta.memoryMiB,
    vcpus: meta.vcpus,
    parentId: meta.parentId,
    artifacts,
    guestToken: meta.guestToken,
    pauseMs: meta.pauseMs,
    machine: meta.machine ?? LEGACY_MACHINE,
    createdAt: new Date(sc.now()).toISOString(),
    ownerKeyId: meta.ownerKeyId ?? null,
    deletedAt: null,
  };
  sc.store.insertSnapshot(snap);
  return snap;
}

/** A snapshot of a sandbox restored from an imported snapshot keeps that one's boot files. */
async function carryBootFiles(sc: ServiceContext, meta: SnapshotMeta, dir: string): Promise<Carried[]> {
  const parent = meta.parentId ? sc.store.getSnapshot(meta.parentId) : undefined;
  const carried = (['kernel', 'initrd'] as const).flatMap((kind) => {
    const a = parent?.artifacts.find((x) => x.kind === kind);
    return a && parent
      ? [{ kind, from: join(snapDir(sc, parent.id), a.path), path: ARCHIVE_FILES[kind] }]
      : [];
  });
  for (const c of carried) {
    const to = join(dir, c.path);
    if (!existsSync(to)) await link(c.from, to).catch(() => copyFile(c.from, to));
  }
  return carried;
}

/**
 * Loads the full saved state into a paused helper VM whose RAM is a shared memory file and
 * saves it again: restores then map that file copy-on-write, like a template's.
 */
async function moveRamToMemoryFile(
  sc: ServiceContext,
  meta: SnapshotMeta,
  dir: string,
  carried: Carried[],
): Promise<void> {
  const image =
    carried.length === 2
      ? {
          kernel: join(dir, ARCHIVE_FILES.kernel),
          initrd: join(dir, ARCHIVE_FILES.initrd),
          rootfs: join(dir, DISK_LAYER),
        }
      : await sc.image(sc.store.getTemplate(meta.templateId).imageKey);
  const helper = `cmp-${meta.id.slice(5, 17)}`;
  await killVm(sc, helper);
  await rm(join(dir, 'memory'), { force: true });
  await rm(join(dir, 'state'), { force: true });
  try {
    await startVm(
      sc,
      {
        id: helper,
        boot: { kernel: image.kernel, initrd: image.initrd, rootfs: image.rootfs },
        resources: { memoryMiB: meta.memoryMiB, vcpus: meta.vcpus },
        machine: meta.machine ?? LEGACY_MACHINE,
        network: { kind: 'restricted' },
        diskLayer: join(dir, DISK_LAYER),
        // The full state's RAM is loaded into a new RAM file, then saved again without it.
        ramFile: join(dir, 'memory'),
        restore: { snapshot: { stateFile: join(dir, FULL_STATE) }, paused: true },
      },
      CLOSED_EGRESS,
    );
    await sc.driver.saveState(helper, join(dir, 'state'));
  } finally {
    await killVm(sc, helper);
  }
  await rm(join(dir, FULL_STATE));
}
