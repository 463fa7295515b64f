import { randomBytes } from 'node:crypto';
import type { SandboxRecord, SnapshotRecord, TemplateRecord, VolumeMount } from '../../core/domain.ts';
import { KilnError, invalidArgument } from '../../core/errors.ts';
import { newId } from '../../core/ids.ts';
import { OPEN_NETWORK, type EgressRules, type SandboxNetwork } from '../../core/network-policy.ts';
import { isHiddenTemplateName } from '../../core/template-steps.ts';
import { validateInt, validateMemoryMiB, validateName, validateVcpus } from '../../core/validate.ts';
import { admitMakingRoom } from '../admission.ts';
import { initPooled, poolable } from '../pool/take.ts';
import { OpRun } from '../journal.ts';
import { sees, seesTemplate, type Caller } from '../scope.ts';
import { mountInGuest, planVolumes, refreshMounts } from './volume-mounts.ts';
import { bootFrom } from './boot.ts';
import { killVm } from './vm.ts';
import type { ServiceContext } from './context.ts';
import { DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, type CreateRequest, type OpCtx } from './types.ts';

/** A create that passed validation and admission: what its locked part needs. */
export interface CreatePlan {
  id: string;
  tpl: TemplateRecord;
  snap: SnapshotRecord;
  timeoutS: number;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  network: SandboxNetwork;
  /** Volumes the guest mounts once it runs. */
  mounts: VolumeMount[];
  /** The mounts came with the restored snapshot's memory (its sandbox's): the guest has them. */
  mountsRestored: boolean;
  /** A warm pool member was taken (`id` is its VM's): the create only runs /init. */
  pooled: boolean;
}

/**
 * A sandbox's agent must hold a token only kilnd knows until /init (issue 10). Templates built
 * before bootstrap tokens existed hold none: they must be rebuilt.
 */
function assertGuestToken(snap: SnapshotRecord, tpl: TemplateRecord): void {
  if (snap.guestToken) return;
  throw new KilnError(
    'invalid_state',
    snap.kind === 'template'
      ? `template "${tpl.name}" was built by an older kiln whose guest agent takes requests from anyone until it is set up; rebuild it: kiln template build --name ${tpl.name}`
      : `snapshot ${snap.id} has no guest token, so its guest agent would take requests from anyone until it is set up; it cannot be restored`,
    { details: { template: tpl.name, snapshotId: snap.id } },
  );
}

function stringMap(field: string, v: unknown): Record<string, string> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalidArgument(field, 'must be an object of strings');
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw invalidArgument(field, `value of "${k}" must be a string`);
  }
  return v as Record<string, string>;
}

/**
 * A template (name or id) or a restorable snapshot (id or name), and the template behind it.
 * Another key's template or snapshot, or one of kiln's hidden templates for a plain key, is not
 * found, exactly like one that does not exist.
 */
function resolveSource(
  sc: ServiceContext,
  ref: string,
  caller: Caller | undefined,
): { tpl: TemplateRecord; snap: SnapshotRecord } {
  validateName('template', ref);
  let tpl: TemplateRecord | undefined;
  try {
    tpl = sc.store.getTemplate(ref);
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  }
  if (tpl && !seesTemplate(caller, tpl)) tpl = undefined;
  // kiln's hidden templates are no source for a plain key: an OCI image's base (`kiln-img-*`,
  // `kiln-res-*`) may be a private registry's image, which a build reaches only through fromImage
  // with credentials the registry accepts.
  if (tpl && caller && !caller.admin && isHiddenTemplateName(tpl.name)) tpl = undefined;
  if (tpl) {
    if (!tpl.snapshotId)
      throw new KilnError('invalid_state', `template "${tpl.name}" has no snapshot yet; build it first`);
    return { tpl, snap: sc.store.getSnapshot(tpl.snapshotId) };
  }
  let snap: SnapshotRecord | undefined;
  try {
    snap = sc.store.getSnapshot(ref);
  } catch (e) {
    if (!(e instanceof KilnError && e.code === 'not_found')) throw e;
  }
  // A deleted snapshot is a layer kept for what stands on it, no longer something to restore.
  if (!snap || snap.deletedAt !== null || snap.kind === 'pause' || !sees(caller, snap.ownerKeyId))
    throw new KilnError('not_found', `template or snapshot "${ref}" does not exist`, {
      details: { template: ref },
    });
  return { tpl: sc.store.getTemplate(snap.templateId), snap };
}

/**
 * Validates a create (its source, resources, timeout, maps) and admits it (memory, disk); the
 * new sandbox's id comes with the plan. A create the warm pool can serve takes a member instead
 * (its id becomes the sandbox's; its memory was admitted when it was filled); otherwise a
 * refusal for room first kills warm pool VMs (admitMakingRoom).
 */
export async function planCreate(sc: ServiceContext, req: CreateRequest, ctx: OpCtx): Promise<CreatePlan> {
  const { tpl, snap } = resolveSource(sc, req.template, ctx.caller);
  assertGuestToken(snap, tpl);
  // RAM and CPUs come back from the snapshot: they cannot differ from it.
  if (req.memoryMiB !== undefined && validateMemoryMiB(req.memoryMiB) !== snap.memoryMiB) {
    throw invalidArgument(
      'memoryMiB',
      `must be ${snap.memoryMiB} MiB, the memory of "${req.template}" (sandboxes restore its memory snapshot)`,
    );
  }
  if (req.vcpus !== undefined && validateVcpus(req.vcpus) !== snap.vcpus) {
    throw invalidArgument(
      'vcpus',
      `must be ${snap.vcpus}, as in "${req.template}" (sandboxes restore its snapshot)`,
    );
  }
  const timeoutS =
    req.timeoutS === undefined ? DEFAULT_TIMEOUT_S : validateInt('timeout', req.timeoutS, 1, MAX_TIMEOUT_S);
  const metadata = stringMap('metadata', req.metadata);
  const source = snap.sandboxId ? sc.store.getSandbox(snap.sandboxId) : undefined;
  const envVars = { ...source?.envVars, ...stringMap('envVars', req.envVars) };
  const network = networkOf(req);
  if (sc.unisolated) needIsolation('network.', network.egress);
  let id = newId('sbx', 16);
  // A snapshot of a sandbox with volumes restores its sshfs mounts: they reconnect, as its own.
  const inherited = source && !req.volumeMounts?.length ? sc.store.listMounts(source.id) : [];
  const mounts =
    inherited.length > 0 ? inherited.map((m) => ({ ...m, sandboxId: id })) : planVolumes(sc, id, req, ctx);
  const member = poolable(sc, snap, tpl.snapshotId, { mounts: mounts.length, egress: network.egress })
    ? sc.pool?.take(snap)
    : undefined;
  if (member) id = member.id;
  else await admitMakingRoom(sc, snap.memoryMiB, snap);
  return {
    pooled: member !== undefined,
    id,
    tpl,
    snap,
    timeoutS,
    metadata,
    envVars,
    network,
    mounts,
    mountsRestored: inherited.length > 0,
  };
}

/**
 * Without sandbox networks (KILN_NETWORK=unisolated) nothing can enforce allow and deny lists:
 * they are refused rather than silently ignored (internet on/off works: QEMU user-net restrict).
 * The error names the list given (`prefix` + `allowOut` or `denyOut`).
 */
export function needIsolation(prefix: string, egress: EgressRules): void {
  const field = egress.allowOut.length > 0 ? 'allowOut' : egress.denyOut.length > 0 ? 'denyOut' : undefined;
  if (field)
    throw invalidArgument(
      `${prefix}${field}`,
      'allow and deny lists need sandbox network isolation, which this kilnd runs without (KILN_NETWORK=unisolated)',
    );
}

/** The create's rules: its network, or open ones with its allowInternet (which may not disagree). */
function networkOf(req: CreateRequest): SandboxNetwork {
  const internet = req.allowInternet ?? req.network?.egress.internet ?? true;
  if (req.network && req.network.egress.internet !== internet)
    throw invalidArgument(
      'allowInternet',
      `is ${internet} but the network rules say internet ${req.network.egress.internet}; give one of them`,
    );
  return req.network ?? { ...OPEN_NETWORK, egress: { ...OPEN_NETWORK.egress, internet } };
}

/**
 * Creates the planned sandbox by restoring its source snapshot: new access token, clock
 * re-synced. Runs under the new sandbox's lock; journalled (record, VM), unwound on failure.
 */
export async function createSandbox(
  sc: ServiceContext,
  p: CreatePlan,
  req: CreateRequest,
  ctx: OpCtx,
): Promise<SandboxRecord> {
  const { id, tpl, snap } = p;
  const token = randomBytes(24).toString('hex');
  const log = sc.log.child({ opId: ctx.opId, sandboxId: id });
  const run = new OpRun(sc, 'create', id, ctx.opId);
  try {
    insertCreating(sc, p, req, token, ctx);
    run.step('sandbox record', { action: 'delete-sandbox', sandboxId: id });
    const g = { token, envVars: p.envVars, egress: p.network.egress };
    if (p.mounts.length > 0) {
      sc.store.setMounts(id, p.mounts);
      run.step('volume mounts', { action: 'detach-volumes', sandboxId: id });
    }
    const times = p.pooled
      ? await initPooled(sc, id, snap, g, run, ctx)
      : await bootFrom(sc, id, snap, g, run, ctx);
    if (p.mounts.length > 0 && !p.mountsRestored) {
      await mountInGuest(sc, id, token, p.mounts, ctx);
      run.step('guest mounts', { action: 'none' });
    } else if (p.mountsRestored) await refreshMounts(sc, id, token, p.mounts, ctx);
    const rec = sc.store.updateSandbox(
      id,
      { state: 'running', startedAt: new Date(sc.now()).toISOString() },
      ['creating'],
    );
    run.done();
    sc.store.appendEvent(id, 'info', 'sandbox created', {
      template: tpl.name,
      snapshot: snap.kind === 'template' ? null : snap.id,
      warmPool: p.pooled,
      opId: ctx.opId ?? null,
    });
    log.info({ template: tpl.name, snapshot: snap.id, ...times }, 'sandbox created');
    if (sc.unisolated) {
      const warning =
        'sandbox is not isolated (KILN_NETWORK=unisolated): it reaches this host and its loopback services';
      sc.store.appendEvent(id, 'warn', warning);
      log.warn(warning);
    }
    return rec;
  } catch (e) {
    log.warn({ err: e }, 'create failed; unwinding');
    await run.fail(e);
    // A taken warm pool member is this create's from the take on, journalled or not yet.
    if (p.pooled)
      await killVm(sc, id).catch((k: unknown) => {
        log.warn({ err: k }, 'warm pool VM not killed');
      });
    throw e;
  }
}

function insertCreating(
  sc: ServiceContext,
  p: CreatePlan,
  req: CreateRequest,
  token: string,
  ctx: OpCtx,
): void {
  const now = sc.now();
  sc.store.insertSandbox({
    id: p.id,
    templateId: p.tpl.id,
    state: 'creating',
    memoryMiB: p.snap.memoryMiB,
    vcpus: p.snap.vcpus,
    metadata: p.metadata,
    envVars: p.envVars,
    accessToken: token,
    createdAt: new Date(now).toISOString(),
    startedAt: null,
    endAt: new Date(now + p.timeoutS * 1000).toISOString(),
    autoPause: req.autoPause ?? false,
    autoResume: req.autoResume ?? false,
    autoPauseMemory: req.autoPauseMemory ?? true,
    pauseKind: null,
    network: p.network,
    trafficToken: randomBytes(24).toString('hex'),
    endReason: null,
    sourceSnapshotId: p.snap.id,
    ownerKeyId: ctx.caller?.keyId ?? null,
    condition: null,
  });
}
