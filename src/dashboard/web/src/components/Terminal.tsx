/**
 * A terminal into the sandbox: a real PTY shell in the guest (through kilnd and the guest agent).
 * Output arrives as server-sent events; keystrokes (Ctrl-C included: the guest's line discipline
 * turns it into SIGINT) and resizes are actions, sent in order.
 */
import { FitAddon } from '@xterm/addon-fit';
import { Terminal as XTerm } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.ts';

function decode(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function Terminal(props: { sandboxId: string; onClose: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('starting…');
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const term = new XTerm({
      convertEol: false,
      cursorBlink: true,
      fontSize: 14,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
      theme: { background: '#0b1020' },
      screenReaderMode: false,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    let tid: string | undefined;
    let es: EventSource | undefined;
    const life = { closed: false };
    let pending = '';
    let sending = false;
    const flush = async (): Promise<void> => {
      if (sending || !tid || !pending) return;
      sending = true;
      const data = pending;
      pending = '';
      try {
        await api('POST', `/api/terminals/${tid}/input`, { data });
      } catch (e) {
        setStatus(`input failed: ${(e as Error).message}`);
      } finally {
        sending = false;
        if (pending) void flush();
      }
    };
    const onData = term.onData((d) => {
      pending += d;
      void flush();
    });
    const onResize = term.onResize(({ cols, rows }) => {
      if (tid) void api('POST', `/api/terminals/${tid}/resize`, { cols, rows }).catch(() => undefined);
    });
    const refit = (): void => {
      fit.fit();
    };
    window.addEventListener('resize', refit);
    void (async () => {
      try {
        const t = await api<{ id: string }>(
          'POST',
          `/api/sandboxes/${encodeURIComponent(props.sandboxId)}/terminals`,
          {
            cols: term.cols,
            rows: term.rows,
          },
        );
        if (life.closed) {
          void api('DELETE', `/api/terminals/${t.id}`).catch(() => undefined);
          return;
        }
        tid = t.id;
        es = new EventSource(`/api/terminals/${t.id}/output`);
        es.addEventListener('data', (e) => {
          term.write(decode(JSON.parse((e as MessageEvent<string>).data) as string));
        });
        es.addEventListener('exit', (e) => {
          setStatus(`ended (${JSON.parse((e as MessageEvent<string>).data) as string})`);
          es?.close();
        });
        setStatus('connected');
        el.dataset['terminal'] = t.id;
        term.focus();
        void flush();
      } catch (e) {
        setStatus(`could not start: ${(e as Error).message}`);
      }
    })();
    return () => {
      life.closed = true;
      window.removeEventListener('resize', refit);
      onData.dispose();
      onResize.dispose();
      es?.close();
      if (tid) void api('DELETE', `/api/terminals/${tid}`).catch(() => undefined);
      term.dispose();
    };
  }, [props.sandboxId]);
  return (
    <section class="terminal-wrap" aria-label="Terminal">
      <div class="row">
        <span class="muted" role="status">
          Terminal: {status}
        </span>
        <button type="button" onClick={props.onClose}>
          Close terminal
        </button>
      </div>
      <div class="terminal" ref={box} data-testid="terminal" />
    </section>
  );
}
