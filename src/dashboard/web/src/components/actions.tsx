/** The actions on one sandbox: kill, pause, resume, extend, snapshot, fork (destructive ones confirm). */
import type { DashSandbox } from '../../../../core/dashboard-types.ts';
import { actionPath as path, api } from '../api.ts';
import { ActionButton } from './common.tsx';
import { ForkAction } from './ForkAction.tsx';

export function SandboxActions(props: {
  s: DashSandbox;
  compact?: boolean;
  /** The most clones one fork may make (the session says). */
  forkMax?: number;
  onDone?: (msg: string) => void;
}) {
  const { s } = props;
  const done = props.onDone ?? (() => undefined);
  const running = s.state === 'running';
  const live = s.state !== 'dead' && s.state !== 'killing';
  const left = Math.max(0, Math.round((Date.parse(s.endAt) - Date.now()) / 1000));
  return (
    <div class="actions" role="group" aria-label={`Actions for ${s.id}`}>
      {running && (
        <ActionButton
          label="Pause"
          ariaLabel={`Pause ${s.id}`}
          run={() => api('POST', path(s.id, 'pause'))}
        />
      )}
      {s.state === 'paused' && (
        <ActionButton
          label="Resume"
          ariaLabel={`Resume ${s.id}`}
          run={() => api('POST', path(s.id, 'resume'), {})}
        />
      )}
      {running && (
        <ActionButton
          label="+5 min"
          ariaLabel={`Extend ${s.id} by 5 minutes`}
          run={() => api('POST', path(s.id, 'timeout'), { timeoutS: Math.min(left + 300, 86_400) })}
        />
      )}
      {running && !props.compact && (
        <ActionButton
          label="Snapshot"
          ariaLabel={`Snapshot ${s.id}`}
          run={async () => {
            const name = window.prompt('Snapshot name (optional)') ?? '';
            const r = await api<{ id: string }>('POST', path(s.id, 'snapshot'), name ? { name } : {});
            done(`snapshot ${r.id} taken`);
          }}
        />
      )}
      {running && !props.compact && <ForkAction id={s.id} max={props.forkMax ?? 1} onDone={done} />}
      {live && (
        <ActionButton
          label="Kill"
          danger
          ariaLabel={`Kill ${s.id}`}
          confirm={`Kill sandbox ${s.id}? Its VM and files are gone for good.`}
          run={() => api('POST', path(s.id, 'kill'))}
        />
      )}
    </div>
  );
}
