import { useEffect, useMemo, useState } from 'preact/hooks';
import type {
  DashEvent,
  DashSample,
  DashSandbox,
  DashSandboxDetail,
} from '../../../../core/dashboard-types.ts';
import { api } from '../api.ts';
import { SandboxActions } from '../components/actions.tsx';
import { Chart } from '../components/Chart.tsx';
import { ErrorNote, StateBadge } from '../components/common.tsx';
import { Terminal } from '../components/Terminal.tsx';
import { bytes, when } from '../format.ts';
import { Files } from './Files.tsx';

/** The detail's history with the live list's newer samples appended. */
function merged(history: DashSample[], recent: DashSample[]): DashSample[] {
  const lastT = history.at(-1)?.t ?? 0;
  const out = [...history, ...recent.filter((s) => s.t > lastT)];
  const since = Date.now() - 3_600_000;
  return out.filter((s) => s.t >= since);
}

function Events(props: { id: string; live: DashEvent[] }) {
  const [older, setOlder] = useState<DashEvent[]>([]);
  const [next, setNext] = useState<string | null | undefined>(undefined);
  const [err, setErr] = useState<string | undefined>();
  // The live stream brings the events in pages; "load more" pages through what it has not sent yet.
  const all = useMemo(() => {
    const seen = new Set<number>();
    return [...props.live, ...older]
      .filter((e) => !seen.has(e.seq) && seen.add(e.seq))
      .sort((a, b) => b.seq - a.seq);
  }, [props.live, older]);
  const more = async (): Promise<void> => {
    try {
      const cursor = next ?? String(Math.max(0, ...props.live.map((e) => e.seq)));
      const r = await api<{ items: DashEvent[]; next: string | null }>(
        'GET',
        `/api/sandboxes/${encodeURIComponent(props.id)}/events?cursor=${encodeURIComponent(cursor)}`,
      );
      setOlder((o) => [...o, ...r.items]);
      setNext(r.next);
    } catch (e) {
      setErr((e as Error).message);
    }
  };
  return (
    <section aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <ErrorNote error={err} />
      <ol class="events" data-testid="events">
        {all.map((e) => (
          <li key={e.seq} class={`lvl-${e.level}`}>
            <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString()}</time> <span>{e.message}</span>
          </li>
        ))}
      </ol>
      {next !== null && (
        <button type="button" onClick={() => void more()}>
          Load more events
        </button>
      )}
    </section>
  );
}

function Ports(props: { id: string; domain: string }) {
  const [port, setPort] = useState('8000');
  const url = `http://${port}-${props.id}.${props.domain}/`;
  return (
    <section aria-labelledby="ports-title">
      <h2 id="ports-title">Published ports</h2>
      <label>
        Guest port{' '}
        <input
          type="number"
          min={1}
          max={65535}
          value={port}
          onInput={(e) => {
            setPort((e.target as HTMLInputElement).value);
          }}
        />
      </label>{' '}
      <a href={url} target="_blank" rel="noopener noreferrer">
        {url}
      </a>
    </section>
  );
}

export function SandboxPage(props: {
  id: string;
  live: DashSandbox | undefined;
  events: DashEvent[];
  forkMax: number;
}) {
  const [detail, setDetail] = useState<DashSandboxDetail | undefined>();
  const [err, setErr] = useState<string | undefined>();
  const [term, setTerm] = useState(false);
  const [note, setNote] = useState<string | undefined>();
  const liveState = props.live?.state;
  useEffect(() => {
    api<DashSandboxDetail>('GET', `/api/sandboxes/${encodeURIComponent(props.id)}`)
      .then(setDetail)
      .catch((e: unknown) => {
        setErr((e as Error).message);
      });
  }, [props.id, liveState]);
  const s: DashSandbox | undefined = props.live ?? detail;
  const samples = useMemo(
    () => merged(detail?.history ?? [], props.live?.recent ?? []),
    [detail, props.live],
  );
  const times = useMemo(() => samples.map((x) => x.t / 1000), [samples]);
  const cpu = useMemo(() => samples.map((x) => x.cpu), [samples]);
  const mem = useMemo(() => samples.map((x) => x.mem), [samples]);
  const disk = useMemo(() => samples.map((x) => x.disk), [samples]);
  if (!s) return err ? <ErrorNote error={err} /> : <p aria-busy="true">Loading {props.id}…</p>;
  return (
    <section aria-labelledby="one-title">
      <p>
        <a href="#/sandboxes">← Sandboxes</a>
      </p>
      <h1 id="one-title">
        {s.id} <StateBadge state={s.state} condition={s.condition} />
      </h1>
      <SandboxActions s={s} forkMax={props.forkMax} onDone={setNote} />
      {note && <p role="status">{note}</p>}
      <dl class="info">
        <dt>Template</dt>
        <dd>{s.template}</dd>
        <dt>Resources</dt>
        <dd>
          {s.vcpus} vCPU, {s.memoryMiB} MiB
        </dd>
        <dt>Created</dt>
        <dd>{when(s.createdAt)}</dd>
        <dt>Ends</dt>
        <dd>{s.state === 'dead' ? (s.endReason ?? 'ended') : when(s.endAt)}</dd>
        <dt>Metadata</dt>
        <dd>
          {Object.entries(s.metadata)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ') || '-'}
        </dd>
      </dl>
      <div class="charts">
        <Chart
          testId="chart-cpu"
          title="CPU %"
          times={times}
          values={cpu}
          unit={(v) => `${Math.round(v)}%`}
          color="#f97316"
          floor={100}
        />
        <Chart
          testId="chart-mem"
          title="Memory (RSS)"
          times={times}
          values={mem}
          unit={bytes}
          color="#38bdf8"
        />
        <Chart
          testId="chart-disk"
          title="Disk (overlay)"
          times={times}
          values={disk}
          unit={bytes}
          color="#a78bfa"
        />
      </div>
      {s.state === 'running' && (
        <section aria-labelledby="term-title">
          <h2 id="term-title">Terminal</h2>
          {term ? (
            <Terminal
              sandboxId={s.id}
              onClose={() => {
                setTerm(false);
              }}
            />
          ) : (
            <button
              type="button"
              onClick={() => {
                setTerm(true);
              }}
            >
              Open terminal
            </button>
          )}
        </section>
      )}
      {s.state === 'running' && <Files id={s.id} />}
      {detail && <Ports id={s.id} domain={detail.sandboxDomain} />}
      <Events id={s.id} live={props.events} />
    </section>
  );
}
