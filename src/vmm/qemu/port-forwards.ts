/**
 * Published guest ports of a running QEMU: host forwards added at run time through the human
 * monitor (`hostfwd_add`) and read back from `info usernet`, which is also the truth after a
 * daemon restart (the forwards live in the QEMU process, not in kiln's records).
 */
import { KilnError } from '../../core/errors.ts';
import type { Endpoint, OpOpts } from '../driver.ts';
import { parseUsernetForwards } from './args.ts';
import type { QmpClient } from './qmp.ts';

/** The `-netdev user` id of every kiln VM (see qemuArgs). */
const NETDEV = 'n0';

async function hmp(q: QmpClient, line: string, opts: OpOpts): Promise<string> {
  return q.execute<string>(
    'human-monitor-command',
    { 'command-line': line },
    {
      timeoutMs: opts.timeoutMs ?? 10_000,
    },
  );
}

/** The forward of `guestPort` on `host` QEMU has now, if any. */
async function existing(
  q: QmpClient,
  host: string,
  guestPort: number,
  opts: OpOpts,
): Promise<Endpoint | undefined> {
  const f = parseUsernetForwards(await hmp(q, 'info usernet', opts))[guestPort];
  return f?.addr === host ? { host, port: f.port } : undefined;
}

/**
 * The host endpoint of `guestPort`, adding a forward on `host` (a port QEMU picks) when the VM
 * has none yet. Callers serialise calls per VM (two concurrent adds would make two forwards).
 */
export async function exposeForward(
  q: QmpClient,
  id: string,
  host: string,
  guestPort: number,
  opts: OpOpts = {},
): Promise<Endpoint> {
  const before = await existing(q, host, guestPort, opts);
  if (before) return before;
  // HMP answers text: empty on success, the reason otherwise (e.g. "could not set up host forwarding rule").
  const said = (await hmp(q, `hostfwd_add ${NETDEV} tcp:${host}:0-:${guestPort}`, opts)).trim();
  const after = await existing(q, host, guestPort, opts);
  if (!after)
    throw new KilnError(
      'driver_error',
      `QEMU did not add a host forward for guest port ${guestPort} of VM ${id}${said ? `: ${said}` : ''}`,
      { details: { id, guestPort } },
    );
  return after;
}
