/** Templates (with their build logs, live while building) and the guest images they boot from. */
import { useEffect, useRef, useState } from 'preact/hooks';
import type {
  DashBuildEnd,
  DashBuildLine,
  DashImage,
  DashTemplate,
} from '../../../../core/dashboard-types.ts';
import { ErrorNote } from '../components/common.tsx';
import { bytes, when } from '../format.ts';
import { useList } from '../use-list.ts';

/**
 * A build's log, streamed (server-sent events): the lines written so far, then each line as the
 * build writes it, then its final status. The browser resumes where it was after a dropped
 * connection (kilnd reads the offset from Last-Event-ID).
 */
function BuildLog(props: { templateId: string; buildId: string; status: string; onEnd: () => void }) {
  const [lines, setLines] = useState<DashBuildLine[]>([]);
  const [status, setStatus] = useState(props.status);
  const [link, setLink] = useState<'connecting' | 'live' | 'reconnecting' | 'closed'>('connecting');
  const pre = useRef<HTMLPreElement>(null);
  const { onEnd } = props;
  useEffect(() => {
    const es = new EventSource(
      `/api/templates/${encodeURIComponent(props.templateId)}/builds/${encodeURIComponent(props.buildId)}/log`,
    );
    es.addEventListener('open', () => {
      setLink('live');
    });
    es.addEventListener('error', () => {
      // CLOSED: kilnd refused the stream (signed out, build gone); else the browser retries.
      setLink(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    });
    es.addEventListener('lines', (e) => {
      const got = JSON.parse((e as MessageEvent<string>).data) as DashBuildLine[];
      setLines((l) => [...l, ...got]);
    });
    es.addEventListener('end', (e) => {
      const end = JSON.parse((e as MessageEvent<string>).data) as DashBuildEnd;
      es.close();
      setLink('closed');
      setStatus(end.reason ? `${end.status} (${end.reason})` : end.status);
      onEnd();
    });
    return () => {
      es.close();
    };
  }, [props.templateId, props.buildId, onEnd]);
  useEffect(() => {
    const el = pre.current;
    // Follow the end of the log unless the reader scrolled up.
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  }, [lines]);
  const live = link === 'live' && status === 'building';
  return (
    <div>
      <p role="status" data-testid="build-status" data-status={status}>
        Build {props.buildId}: {status}
        {live ? ' (live)' : link === 'reconnecting' ? ' (reconnecting…)' : ''}
      </p>
      <pre class="log" tabIndex={0} aria-label="build log" data-testid="build-log" ref={pre}>
        {lines.map((l) => `${l.at}  ${l.message}`).join('\n') || '(no log lines)'}
      </pre>
    </div>
  );
}

/** The guest images (read again with the templates: a build from an OCI image adds one). */
function ImagesTable(props: { tick: number }) {
  const { items, err } = useList<DashImage>('/api/images', props.tick);
  return (
    <section aria-labelledby="img-title">
      <h2 id="img-title">Images</h2>
      <ErrorNote error={err} />
      {items?.length === 0 && <p>No images you can see. Build one with kiln image build.</p>}
      <div class="table-wrap">
        <table data-testid="images">
          <thead>
            <tr>
              <th scope="col">Image</th>
              <th scope="col">Source</th>
              <th scope="col" class="wide">
                Kernel
              </th>
              <th scope="col">Size on disk</th>
              <th scope="col" class="wide">
                Created
              </th>
              <th scope="col">Templates</th>
            </tr>
          </thead>
          <tbody>
            {(items ?? []).map((i) => (
              <tr key={i.key} data-image={i.key}>
                <th scope="row">
                  {i.names.join(', ') || '(unnamed)'} <code title={i.key}>{i.key.slice(0, 12)}</code>
                </th>
                <td title={i.digest ?? undefined}>{i.source}</td>
                <td class="wide">{i.kernel}</td>
                <td>{bytes(i.diskBytes)}</td>
                <td class="wide">{when(i.createdAt)}</td>
                <td data-testid="image-templates">{i.templates.join(', ') || '-'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function TemplatesPage() {
  const [tick, setTick] = useState(0);
  const { items, err } = useList<DashTemplate>('/api/templates', tick);
  const [open, setOpen] = useState<{ t: string; b: string; status: string } | undefined>();
  // A build that ended: the table's statuses are read again.
  const [onEnd] = useState(() => () => {
    setTick((t) => t + 1);
  });
  return (
    <section aria-labelledby="tpl-title">
      <h1 id="tpl-title">Templates</h1>
      <ErrorNote error={err} />
      <div class="table-wrap">
        <table data-testid="templates">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Ready</th>
              <th scope="col">Resources</th>
              <th scope="col" class="wide">
                Created
              </th>
              <th scope="col">Builds</th>
            </tr>
          </thead>
          <tbody>
            {(items ?? []).map((t) => (
              <tr key={t.id} data-template={t.name}>
                <th scope="row">{t.name}</th>
                <td>{t.ready ? 'yes' : 'no'}</td>
                <td>{t.vcpus ? `${t.vcpus} vCPU, ${t.memoryMiB} MiB` : '-'}</td>
                <td class="wide">{when(t.createdAt)}</td>
                <td>
                  {t.builds.length === 0
                    ? '-'
                    : t.builds.map((b) => (
                        <button
                          type="button"
                          class="link"
                          key={b.id}
                          aria-label={`Build log of ${t.name}, ${b.status}, ${new Date(b.createdAt).toLocaleString()}`}
                          onClick={() => {
                            setOpen({ t: t.id, b: b.id, status: b.status });
                          }}
                        >
                          {b.status} {new Date(b.createdAt).toLocaleString()}
                        </button>
                      ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {open && (
        <BuildLog key={open.b} templateId={open.t} buildId={open.b} status={open.status} onEnd={onEnd} />
      )}
      <ImagesTable tick={tick} />
    </section>
  );
}
