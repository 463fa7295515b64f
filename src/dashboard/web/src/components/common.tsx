/** Small shared pieces: state badges, action buttons with confirmation, error notes. */
import { useState } from 'preact/hooks';

export function StateBadge(props: { state: string; condition?: string | null }) {
  return (
    <span class={`badge state-${props.state}`} data-state={props.state}>
      {props.state}
      {props.condition ? ` (${props.condition})` : ''}
    </span>
  );
}

/**
 * A button that runs an action, disabled while it runs; `confirm` asks first (destructive ones).
 * Failures are shown next to it and announced.
 */
export function ActionButton(props: {
  label: string;
  run: () => Promise<unknown>;
  confirm?: string;
  danger?: boolean;
  disabled?: boolean;
  ariaLabel?: string;
}) {
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<string | undefined>();
  const click = async (): Promise<void> => {
    if (props.confirm && !window.confirm(props.confirm)) return;
    setBusy(true);
    setErr(undefined);
    try {
      await props.run();
    } catch (e) {
      setErr((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button
        type="button"
        class={props.danger ? 'danger' : ''}
        disabled={busy || props.disabled}
        aria-label={props.ariaLabel ?? props.label}
        onClick={() => void click()}
      >
        {busy ? `${props.label}…` : props.label}
      </button>
      {err && (
        <span class="err" role="alert">
          {err}
        </span>
      )}
    </span>
  );
}

export function ErrorNote(props: { error: string | undefined }) {
  return props.error ? (
    <p class="err" role="alert">
      {props.error}
    </p>
  ) : null;
}
