import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactRecord, SnapshotRecord, TemplateRecord } from '../../core/domain.ts';
import { BOOTSTRAP_KERNEL_ARG, tokenSha256 } from '../../core/envd-auth.ts';
import { newId } from '../../core/ids.ts';
import { validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import { waitForHttp } from '../../vmm/health.ts';
import { OpRun } from '../journal.ts';
import { CLOSED_EGRESS } from '../networks.ts';
import { agentUrl, startVm, stopVm } from './vm.ts';
import { snapDir, type ServiceContext } from './context.ts';
import { snapshotArtifacts } from './snapshot-files.ts';
import type { BootImage, OpCtx } from './types.ts';

type Resources = { memoryMiB: number; vcpus: number };

/**
 * Boots `image` once, waits for its agent and snapshots it: RAM file, device state and frozen
 * disk, stored content-addressed under snapshots/<id>. The template then points to it.
 */
export async function buildTemplate(
  sc: ServiceContext,
  name: string,
  image: BootImage,
  res: Resources,
  ctx: OpCtx,
): Promise<TemplateRecord> {
  validateName('template', name);
  validateMemoryMiB(res.memoryMiB);
  validateVcpus(res.vcpus);
  const log = sc.log.child({ opId: ctx.opId, template: name });
  const run = new OpRun(sc, 'template', name, ctx.opId);
  try {
    const staging = join(sc.dataDir, 'snapshots', `.staging-${run.op.id}`);
    await mkdir(staging, { recursive: true });
    run.step('staging dir', { action: 'remove-path', path: staging });
    const { bootstrap, pauseMs, machine } = await bootAndSave(sc, run, image, res, staging);
    const artifacts = await snapshotArtifacts(staging);
    const snapId =
      'snap-' +
      createHash('sha256')
        .update(artifacts.map((a) => a.sha256).join(':'))
        .digest('hex')
        .slice(0, 24);
    await rename(staging, snapDir(sc, snapId));
    run.step('snapshot dir', { action: 'remove-path', path: snapDir(sc, snapId) });
    const tpl = recordTemplate(sc, run, { name, image, res, snapId, artifacts, bootstrap, machine });
    run.done();
    log.info({ snapshotId: snapId, pauseMs: Math.round(pauseMs) }, 'template built');
    return tpl;
  } catch (e) {
    await run.fail(e);
    throw e;
  }
}

/**
 * Boots the template VM with its RAM in a shared file under `staging`, waits for its agent,
 * saves its state and stops it keeping its overlay: the three files of a snapshot.
 */
async function bootAndSave(
  sc: ServiceContext,
  run: OpRun,
  image: BootImage,
  res: Resources,
  staging: string,
): Promise<{ bootstrap: string; pauseMs: number; machine: number }> {
  const vmId = `tplbuild-${run.op.id.slice(3, 15)}`;
  run.step('template VM', { action: 'kill-vm', vmId });
  // The agent boots holding only this secret's hash (kernel command line): from its first
  // instant to each sandbox's /init, which presents the secret, it obeys no one else.
  const bootstrap = randomBytes(32).toString('hex');
  const info = await startVm(
    sc,
    {
      id: vmId,
      boot: {
        kernel: image.kernel,
        initrd: image.initrd,
        rootfs: image.rootfs,
        kernelArgs: [`${BOOTSTRAP_KERNEL_ARG}=${tokenSha256(bootstrap)}`],
      },
      resources: { memoryMiB: res.memoryMiB, vcpus: res.vcpus },
      network: { kind: 'open' },
      ramFile: join(staging, 'memory'),
    },
    CLOSED_EGRESS,
  );
  await waitForHttp(`${agentUrl(info)}/health`, {
    timeoutMs: 180_000,
    alive: async () => (await sc.driver.status(vmId)).state !== 'stopped',
  });
  const saved = await sc.driver.saveState(vmId, join(staging, 'state'));
  await stopVm(sc, vmId, { keepOverlayAs: join(staging, 'disk.qcow2') });
  return { bootstrap, pauseMs: saved.pauseMs, machine: info.machine };
}

/** Records the template's snapshot and the template (a rebuild keeps its id and owner). */
function recordTemplate(
  sc: ServiceContext,
  run: OpRun,
  b: {
    name: string;
    image: BootImage;
    res: Resources;
    snapId: string;
    artifacts: ArtifactRecord[];
    bootstrap: string;
    machine: number;
  },
): TemplateRecord {
  const existing = sc.store.listTemplates().find((t) => t.name === b.name);
  const tpl: TemplateRecord = {
    id: existing?.id ?? newId('tpl'),
    name: b.name,
    imageKey: b.image.key,
    memoryMiB: b.res.memoryMiB,
    vcpus: b.res.vcpus,
    snapshotId: b.snapId,
    createdAt: new Date(sc.now()).toISOString(),
    // Built by kiln itself: every key may create from it.
    ownerKeyId: existing?.ownerKeyId ?? null,
  };
  const snap: SnapshotRecord = {
    id: b.snapId,
    name: null,
    kind: 'template',
    sandboxId: null,
    templateId: tpl.id,
    memoryMiB: b.res.memoryMiB,
    vcpus: b.res.vcpus,
    parentId: null,
    artifacts: b.artifacts,
    guestToken: b.bootstrap,
    pauseMs: null,
    machine: b.machine,
    createdAt: tpl.createdAt,
    ownerKeyId: null,
    deletedAt: null,
  };
  sc.store.insertSnapshot(snap);
  run.step('snapshot record', { action: 'delete-snapshot', snapshotId: b.snapId });
  sc.store.putTemplate(tpl);
  return tpl;
}
