/**
 * Fork with a count: the button opens a modal dialog (the confirmation) where the user picks how
 * many clones to make, 1..max (kilnd's bound); each clone is a new running sandbox restored from
 * a snapshot of this one taken now.
 */
import { useRef, useState } from 'preact/hooks';
import type { DashFork } from '../../../../core/dashboard-types.ts';
import { actionPath, api } from '../api.ts';
import { ErrorNote } from './common.tsx';

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

/** What a fork made, as one sentence. */
export function forkNote(r: DashFork): string {
  const made = `forked into ${plural(r.sandboxes.length, 'new sandbox', 'new sandboxes')}`;
  const ids = r.sandboxes.length ? `: ${r.sandboxes.join(', ')}` : '';
  const failed = r.errors.length
    ? `; ${plural(r.errors.length, 'clone', 'clones')} failed: ${r.errors.join('; ')}`
    : '';
  return made + ids + failed;
}

export function ForkAction(props: { id: string; max: number; onDone: (msg: string) => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [count, setCount] = useState('1');
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | undefined>();
  const n = Number(count);
  const valid = Number.isInteger(n) && n >= 1 && n <= props.max;
  const titleId = `fork-title-${props.id}`;
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (!valid || busy) return;
    setBusy(true);
    setErr(undefined);
    try {
      const r = await api<DashFork>('POST', actionPath(props.id, 'fork'), { count: n });
      dialog.current?.close();
      props.onDone(forkNote(r));
    } catch (x) {
      setErr((x as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button
        type="button"
        aria-label={`Fork ${props.id}`}
        aria-haspopup="dialog"
        onClick={() => {
          setCount('1');
          setErr(undefined);
          dialog.current?.showModal();
        }}
      >
        Fork…
      </button>
      <dialog ref={dialog} aria-labelledby={titleId}>
        <form onSubmit={(e) => void submit(e)}>
          <h2 id={titleId}>Fork {props.id}</h2>
          <p>
            Each fork is a new running sandbox, restored from a snapshot of this one taken now (its memory,
            processes and files).
          </p>
          <label>
            Number of forks{' '}
            <input
              type="number"
              min={1}
              max={props.max}
              step={1}
              required
              value={count}
              onInput={(e) => {
                setCount((e.target as HTMLInputElement).value);
              }}
            />
          </label>{' '}
          <span class="muted">1 to {props.max}</span>
          <ErrorNote error={err} />
          <div class="row dialog-buttons">
            <button
              type="button"
              onClick={() => {
                dialog.current?.close();
              }}
            >
              Cancel
            </button>
            <button type="submit" disabled={busy || !valid}>
              {busy ? 'Forking…' : valid ? `Fork into ${plural(n, 'sandbox', 'sandboxes')}` : 'Fork'}
            </button>
          </div>
        </form>
      </dialog>
    </span>
  );
}
