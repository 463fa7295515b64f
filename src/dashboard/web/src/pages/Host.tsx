import type { DashHost } from '../../../../core/dashboard-types.ts';
import { bytes } from '../format.ts';

export function HostPage(props: { host: DashHost | undefined }) {
  const h = props.host;
  if (!h) return <p aria-busy="true">Loading the host's figures…</p>;
  const m = h.memory;
  const states = Object.entries(h.sandboxes);
  return (
    <section aria-labelledby="host-title">
      <h1 id="host-title">Host</h1>
      <div class="cards">
        <div class="card">
          <h2>kiln</h2>
          <dl>
            <dt>Version</dt>
            <dd data-testid="host-version">{h.version}</dd>
            <dt>Accelerator</dt>
            <dd data-testid="host-accel">{h.accel ? h.accel.toUpperCase() : 'not known yet (no VM ran)'}</dd>
          </dl>
        </div>
        <div class="card">
          <h2>Memory</h2>
          <dl>
            <dt>Admitted to sandboxes</dt>
            <dd>
              {m.admittedMiB} MiB{m.limitMiB !== null ? ` of ${m.limitMiB} MiB allowed` : ''}
            </dd>
            <dt>Host used</dt>
            <dd>
              {m.usedMiB} MiB of {m.totalMiB} MiB
            </dd>
            <dt>Host free</dt>
            <dd>{m.freeMiB} MiB</dd>
          </dl>
          {m.limitMiB ? (
            <meter min={0} max={m.limitMiB} value={m.admittedMiB} aria-label="memory admitted of the limit" />
          ) : null}
        </div>
        <div class="card">
          <h2>Sandboxes</h2>
          {states.length === 0 ? (
            <p>None live.</p>
          ) : (
            <dl data-testid="host-counts">
              {states.map(([s, n]) => (
                <>
                  <dt>{s}</dt>
                  <dd>{n}</dd>
                </>
              ))}
            </dl>
          )}
        </div>
        <div class="card">
          <h2>Disk</h2>
          <dl>
            <dt>Images</dt>
            <dd>{bytes(h.disk.images)}</dd>
            <dt>Templates</dt>
            <dd>{bytes(h.disk.templates)}</dd>
            <dt>Snapshots</dt>
            <dd>{bytes(h.disk.snapshots)}</dd>
            <dt>VM overlays</dt>
            <dd>{bytes(h.disk.overlays)}</dd>
          </dl>
        </div>
      </div>
      <p class="muted">Updated {new Date(h.at).toLocaleTimeString()}</p>
    </section>
  );
}
