/** The dashboard's page: navigation, the hash route, one live stream per view. */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { DashSession } from '../../../core/dashboard-types.ts';
import type { SandboxPage as SandboxPageType } from './pages/Sandbox.tsx';
import { loadSession, signOut, useLive } from './api.ts';
import { HostPage } from './pages/Host.tsx';
import { KeysPage, SnapshotsPage } from './pages/Objects.tsx';
import { SandboxesPage } from './pages/Sandboxes.tsx';
import { TemplatesPage } from './pages/Templates.tsx';
import './styles.css';

const NAV: [string, string][] = [
  ['#/host', 'Host'],
  ['#/sandboxes', 'Sandboxes'],
  ['#/templates', 'Templates'],
  ['#/snapshots', 'Snapshots'],
  ['#/keys', 'API keys'],
];

function useHash(): string {
  const [h, setH] = useState(location.hash || '#/sandboxes');
  useEffect(() => {
    const on = (): void => {
      setH(location.hash || '#/sandboxes');
    };
    window.addEventListener('hashchange', on);
    return () => {
      window.removeEventListener('hashchange', on);
    };
  }, []);
  return h;
}

type SandboxPageProps = Parameters<typeof SandboxPageType>[0];

/**
 * One sandbox's page, loaded on first use: its charts (uPlot) and terminal (xterm.js) are most of
 * the front end's code, and the sandboxes table should not wait for them to be parsed.
 */
function LazySandboxPage(props: SandboxPageProps) {
  const [page, setPage] = useState<{ C: typeof SandboxPageType } | undefined>();
  const [err, setErr] = useState<string | undefined>();
  useEffect(() => {
    import('./pages/Sandbox.tsx').then(
      (m) => {
        setPage({ C: m.SandboxPage });
      },
      (e: unknown) => {
        setErr(String(e));
      },
    );
  }, []);
  if (err) return <p role="alert">The sandbox page failed to load: {err}</p>;
  if (!page) return <p aria-busy="true">Loading…</p>;
  return <page.C {...props} />;
}

function Live(props: { route: string; session: DashSession }) {
  const one = /^#\/sandboxes\/([A-Za-z0-9_-]+)$/.exec(props.route)?.[1];
  const live = useLive(one);
  if (one)
    return (
      <LazySandboxPage
        id={one}
        live={live.sandboxes?.find((s) => s.id === one)}
        events={live.events}
        forkMax={props.session.forkMax}
      />
    );
  if (props.route === '#/host') return <HostPage host={live.host} />;
  return <SandboxesPage sandboxes={live.sandboxes} />;
}

function App() {
  const [session, setSession] = useState<DashSession | undefined>();
  const [err, setErr] = useState<string | undefined>();
  const route = useHash();
  useEffect(() => {
    loadSession()
      .then(setSession)
      .catch((e: unknown) => {
        setErr((e as Error).message);
      });
  }, []);
  useEffect(() => {
    const main = document.getElementById('main');
    main?.focus();
  }, [route]);
  if (err) return <p role="alert">{err}</p>;
  if (!session) return <p aria-busy="true">Loading…</p>;
  const section = route.startsWith('#/sandboxes/') ? '#/sandboxes' : route;
  return (
    <>
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById('main')?.focus();
        }}
      >
        Skip to content
      </a>
      <header>
        <span class="brand">kiln</span>
        <nav aria-label="Dashboard">
          <ul>
            {NAV.map(([href, label]) => (
              <li>
                <a href={href} aria-current={section === href ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who muted">
          {session.label}
          {session.admin ? ' (admin)' : ''}
        </span>
        <button type="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route === '#/templates' ? (
          <TemplatesPage />
        ) : route === '#/snapshots' ? (
          <SnapshotsPage />
        ) : route === '#/keys' ? (
          <KeysPage admin={session.admin} />
        ) : (
          <Live route={route} session={session} />
        )}
      </main>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
