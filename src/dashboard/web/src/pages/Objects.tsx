/** Snapshots (restore, export, delete), API keys (create once, revoke). */
import { useState } from 'preact/hooks';
import type { DashKey, DashSnapshot } from '../../../../core/dashboard-types.ts';
import { api } from '../api.ts';
import { ActionButton, ErrorNote } from '../components/common.tsx';
import { when } from '../format.ts';
import { useList } from '../use-list.ts';

export function SnapshotsPage() {
  const [tick, setTick] = useState(0);
  const { items, err } = useList<DashSnapshot>('/api/snapshots', tick);
  const [note, setNote] = useState<string | undefined>();
  return (
    <section aria-labelledby="snap-title">
      <h1 id="snap-title">Snapshots</h1>
      <ErrorNote error={err} />
      {note && <p role="status">{note}</p>}
      {items?.length === 0 && <p>No snapshots. Take one from a running sandbox's page.</p>}
      <div class="table-wrap">
        <table data-testid="snapshots">
          <thead>
            <tr>
              <th scope="col">ID</th>
              <th scope="col">Name</th>
              <th scope="col" class="wide">
                From sandbox
              </th>
              <th scope="col" class="wide">
                Taken
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(items ?? []).map((s) => (
              <tr key={s.id}>
                <th scope="row">{s.id}</th>
                <td>{s.name ?? '-'}</td>
                <td class="wide">{s.sandboxId ?? '-'}</td>
                <td class="wide">{when(s.createdAt)}</td>
                <td class="actions">
                  <ActionButton
                    label="Restore"
                    ariaLabel={`Restore ${s.id}`}
                    run={async () => {
                      const r = await api<{ sandboxId: string }>('POST', `/api/snapshots/${s.id}/restore`);
                      location.hash = `#/sandboxes/${r.sandboxId}`;
                    }}
                  />
                  <a class="button" href={`/api/snapshots/${encodeURIComponent(s.id)}/export`} download>
                    Export
                  </a>
                  <ActionButton
                    label="Delete"
                    danger
                    ariaLabel={`Delete ${s.id}`}
                    confirm={`Delete snapshot ${s.id}? It can no longer be restored.`}
                    run={async () => {
                      const r = await api<{
                        deleted: string;
                        layerKeptFor: { sandboxes: string[]; snapshots: string[] };
                      }>('DELETE', `/api/snapshots/${s.id}`);
                      const kept = [...r.layerKeptFor.sandboxes, ...r.layerKeptFor.snapshots];
                      setNote(
                        kept.length
                          ? `Deleted ${r.deleted}; its disk layer is kept until ${kept.join(', ')} no longer stand on it.`
                          : `Deleted ${r.deleted}; nothing stood on it, its files are reclaimed.`,
                      );
                      setTick((t) => t + 1);
                    }}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function KeysPage(props: { admin: boolean }) {
  const [tick, setTick] = useState(0);
  const { items, err } = useList<DashKey>(props.admin ? '/api/keys' : '/api/session', tick);
  const [name, setName] = useState('');
  const [admin, setAdmin] = useState(false);
  const [created, setCreated] = useState<(DashKey & { key: string }) | undefined>();
  const [createErr, setCreateErr] = useState<string | undefined>();
  if (!props.admin) return <p>Only an admin key's session manages API keys.</p>;
  const create = async (e: Event): Promise<void> => {
    e.preventDefault();
    setCreateErr(undefined);
    try {
      setCreated(
        await api<DashKey & { key: string }>('POST', '/api/keys', { name: name || 'dashboard', admin }),
      );
      setName('');
      setTick((t) => t + 1);
    } catch (x) {
      setCreateErr((x as Error).message);
    }
  };
  return (
    <section aria-labelledby="keys-title">
      <h1 id="keys-title">API keys</h1>
      <form class="row" onSubmit={(e) => void create(e)}>
        <label>
          Name{' '}
          <input
            value={name}
            onInput={(e) => {
              setName((e.target as HTMLInputElement).value);
            }}
            placeholder="dashboard"
          />
        </label>
        <label>
          <input
            type="checkbox"
            checked={admin}
            onChange={(e) => {
              setAdmin((e.target as HTMLInputElement).checked);
            }}
          />{' '}
          admin
        </label>
        <button type="submit">Create key</button>
      </form>
      <ErrorNote error={createErr} />
      {created && (
        <div class="card" role="status">
          <p>
            Key <strong>{created.name}</strong> created. Copy it now: it is shown only once.
          </p>
          <code class="secret" data-testid="new-key">
            {created.key}
          </code>
        </div>
      )}
      <ErrorNote error={err} />
      <div class="table-wrap">
        <table data-testid="keys">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Prefix</th>
              <th scope="col">Admin</th>
              <th scope="col" class="wide">
                Created
              </th>
              <th scope="col" class="wide">
                Last used
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(items ?? []).map((k) => (
              <tr key={k.id}>
                <th scope="row">{k.name}</th>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{k.admin ? 'yes' : 'no'}</td>
                <td class="wide">{when(k.createdAt)}</td>
                <td class="wide">{when(k.lastUsedAt)}</td>
                <td>
                  <ActionButton
                    label="Revoke"
                    danger
                    ariaLabel={`Revoke ${k.name}`}
                    confirm={`Revoke key "${k.name}"? Programs using it stop working, and its dashboard sessions end.`}
                    run={async () => {
                      await api('DELETE', `/api/keys/${k.id}`);
                      setTick((t) => t + 1);
                    }}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
