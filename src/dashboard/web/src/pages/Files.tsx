/** The file browser of a running sandbox: list, download, upload (as the guest's default user). */
import { useEffect, useState } from 'preact/hooks';
import type { DashEntry } from '../../../../core/dashboard-types.ts';
import { api, uploadFile } from '../api.ts';
import { ErrorNote } from '../components/common.tsx';
import { bytes } from '../format.ts';

const parent = (p: string): string => p.replace(/\/[^/]+\/?$/, '') || '/';
const join = (dir: string, name: string): string => `${dir.replace(/\/$/, '')}/${name}`;

export function Files(props: { id: string }) {
  const [dir, setDir] = useState('/home/user');
  const [typed, setTyped] = useState('/home/user');
  const [entries, setEntries] = useState<DashEntry[] | undefined>();
  const [err, setErr] = useState<string | undefined>();
  const [status, setStatus] = useState('');
  const [tick, setTick] = useState(0);
  const base = `/api/sandboxes/${encodeURIComponent(props.id)}/files`;
  useEffect(() => {
    setErr(undefined);
    api<DashEntry[]>('GET', `${base}?path=${encodeURIComponent(dir)}`)
      .then(setEntries)
      .catch((e: unknown) => {
        setEntries(undefined);
        setErr((e as Error).message);
      });
  }, [dir, tick, base]);
  const onUpload = async (input: HTMLInputElement): Promise<void> => {
    const files = [...(input.files ?? [])];
    for (const f of files) {
      setStatus(`uploading ${f.name}…`);
      try {
        await uploadFile(props.id, join(dir, f.name), f);
        setStatus(`uploaded ${f.name}`);
      } catch (e) {
        setStatus('');
        setErr((e as Error).message);
      }
    }
    input.value = '';
    setTick((t) => t + 1);
  };
  return (
    <section aria-labelledby="files-title">
      <h2 id="files-title">Files</h2>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          setDir(typed || '/');
        }}
      >
        <label>
          Directory{' '}
          <input
            value={typed}
            onInput={(e) => {
              setTyped((e.target as HTMLInputElement).value);
            }}
            aria-describedby="files-status"
          />
        </label>
        <button type="submit">Open</button>
        <button
          type="button"
          onClick={() => {
            setDir(parent(dir));
            setTyped(parent(dir));
          }}
        >
          Up
        </button>
        <label class="upload">
          Upload to this directory{' '}
          <input
            type="file"
            multiple
            data-testid="upload"
            onChange={(e) => void onUpload(e.target as HTMLInputElement)}
          />
        </label>
      </form>
      <p id="files-status" role="status" class="muted">
        {status}
      </p>
      <ErrorNote error={err} />
      {entries && (
        <div class="table-wrap">
          <table data-testid="files">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Size</th>
                <th scope="col" class="wide">
                  Modified
                </th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.path}>
                  <th scope="row">
                    {e.type === 'dir' ? (
                      <button
                        type="button"
                        class="link"
                        onClick={() => {
                          setDir(e.path);
                          setTyped(e.path);
                        }}
                      >
                        {e.name}/
                      </button>
                    ) : (
                      <a href={`${base}/content?path=${encodeURIComponent(e.path)}`} download={e.name}>
                        {e.name}
                      </a>
                    )}
                  </th>
                  <td>{e.type === 'dir' ? '-' : bytes(e.size)}</td>
                  <td class="wide">{e.modified ? new Date(e.modified).toLocaleString() : '-'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
