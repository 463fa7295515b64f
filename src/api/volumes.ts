/**
 * Starts kilnd's volumes (composition root, like the networks): the volume service and, with
 * sandbox networks, the gateway that serves the guests' mounts (its ports loaded into every
 * slot's rules). Without sandbox networks there is no gateway, and creates with mounts are refused.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { UndoStack } from '../core/undo.ts';
import { VolumeGateway } from '../daemon/volumes/gateway.ts';
import { VolumeService, type VolumeMountRequest } from '../daemon/volumes/volume-service.ts';
import { MAX_VOLUME_MOUNTS } from '../core/volume-route.ts';
import { invalidArgument } from '../core/errors.ts';
import type { SandboxNetworks } from '../net/sandbox-networks.ts';
import type { Store } from '../store/store.ts';

export async function openVolumes(
  store: Store,
  dataDir: string,
  nets: SandboxNetworks | undefined,
  log: Logger,
  undo: UndoStack,
): Promise<VolumeService> {
  const volumes = new VolumeService({ store, dataDir, log: log.child({ component: 'volumes' }) });
  if (!nets) return volumes;
  const etcDir = join(volumes.baseDir, '.etc');
  await mkdir(etcDir, { recursive: true, mode: 0o755 });
  const gw = await VolumeGateway.start({
    count: MAX_VOLUME_MOUNTS,
    owner: volumes.owner,
    etcDir,
    log: log.child({ component: 'volume-gateway' }),
    resolve: (addr, index) => {
      const p = nets.peer(addr);
      return p ? volumes.connectionDir(p.owner, index) : undefined;
    },
  });
  undo.push('close the volume gateway', () => gw.close());
  await nets.setVolumePorts(gw.ports());
  return volumes;
}

/** A create's `volumeMounts` (both APIs): `[{name, path}]`; absent (or null, E2B's SDK) is none. */
export function parseVolumeMounts(raw: unknown): VolumeMountRequest[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalidArgument('volumeMounts', 'must be a list of {name, path}');
  return raw.map((m: unknown, i) => {
    const o = m as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || typeof o['name'] !== 'string' || typeof o['path'] !== 'string')
      throw invalidArgument(`volumeMounts[${i}]`, 'must be {name: string, path: string}');
    return { name: o['name'], path: o['path'] };
  });
}
