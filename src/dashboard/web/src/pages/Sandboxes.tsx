import { useEffect, useMemo, useState } from 'preact/hooks';
import type { DashSandbox } from '../../../../core/dashboard-types.ts';
import { SandboxActions } from '../components/actions.tsx';
import { StateBadge } from '../components/common.tsx';
import { Sparkline } from '../components/Sparkline.tsx';
import { age, bytes, timeLeft } from '../format.ts';

const STATES = ['all', 'running', 'paused', 'creating', 'pausing', 'resuming', 'killing'];

/** `k=v k2=v2` -> pairs every sandbox must have. */
function parseMeta(text: string): [string, string][] {
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf('=');
      return i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)];
    });
}

function useNow(everyMs: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => {
      setNow(Date.now());
    }, everyMs);
    return () => {
      clearInterval(t);
    };
  }, [everyMs]);
  return now;
}

export function SandboxesPage(props: { sandboxes: DashSandbox[] | undefined }) {
  const [state, setState] = useState('all');
  const [meta, setMeta] = useState('');
  const now = useNow(1000);
  const rows = useMemo(() => {
    const pairs = parseMeta(meta);
    return (props.sandboxes ?? []).filter(
      (s) =>
        (state === 'all' || s.state === state) &&
        pairs.every(([k, v]) => (v === '' ? k in s.metadata : s.metadata[k] === v)),
    );
  }, [props.sandboxes, state, meta]);
  return (
    <section aria-labelledby="sbx-title">
      <h1 id="sbx-title">Sandboxes</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
        }}
        aria-label="Filter sandboxes"
      >
        <label>
          State{' '}
          <select
            value={state}
            onChange={(e) => {
              setState((e.target as HTMLSelectElement).value);
            }}
          >
            {STATES.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Metadata{' '}
          <input
            type="search"
            placeholder="key=value"
            value={meta}
            onInput={(e) => {
              setMeta((e.target as HTMLInputElement).value);
            }}
          />
        </label>
        <span class="muted" role="status">
          {props.sandboxes === undefined ? 'loading…' : `${rows.length} of ${props.sandboxes.length}`}
        </span>
      </form>
      <div class="table-wrap">
        <table data-testid="sandbox-table">
          <thead>
            <tr>
              <th scope="col">ID</th>
              <th scope="col">Template</th>
              <th scope="col">State</th>
              <th scope="col" class="wide">
                Metadata
              </th>
              <th scope="col">Age</th>
              <th scope="col">Time left</th>
              <th scope="col" class="wide">
                CPU
              </th>
              <th scope="col" class="wide">
                Memory
              </th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.id} data-sandbox={s.id} data-state={s.state}>
                <th scope="row">
                  <a href={`#/sandboxes/${s.id}`}>{s.id}</a>
                </th>
                <td>{s.template}</td>
                <td>
                  <StateBadge state={s.state} condition={s.condition} />
                </td>
                <td class="wide meta">
                  {Object.entries(s.metadata).map(([k, v]) => (
                    <code>
                      {k}={v}
                    </code>
                  ))}
                </td>
                <td>{age(s.createdAt, now)}</td>
                <td>{timeLeft(s.endAt, s.state, now)}</td>
                <td class="wide">
                  <Sparkline
                    values={s.recent.map((x) => x.cpu)}
                    max={100}
                    label="CPU"
                    unit={(v) => `${Math.round(v)}%`}
                  />
                </td>
                <td class="wide">
                  <Sparkline values={s.recent.map((x) => x.mem)} label="Memory" unit={bytes} />
                </td>
                <td>
                  <SandboxActions s={s} compact />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {props.sandboxes !== undefined && rows.length === 0 && <p>No sandboxes match.</p>}
      </div>
    </section>
  );
}
