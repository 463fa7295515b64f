/**
 * The CLI's help texts: one entry per command and subcommand, so `kiln X Y --help` and
 * `kiln help X Y` print the usage and options of exactly that command. Pure data, no side effects.
 */
import {
  DEFAULT_API_KEY_NAME,
  DEFAULT_FORK_COUNT,
  DEFAULT_MEMORY_MIB,
  DEFAULT_TEMPLATE,
  DEFAULT_VCPUS,
} from '../core/defaults.ts';

/** One command's help: its usage lines, what it does, its options. */
interface CommandHelp {
  usage: string[];
  summary: string;
  options?: [flag: string, meaning: string][];
}

const JSON_OPT: [string, string] = ['--json', 'print JSON for programs instead of a table'];
const TIMEOUT_OPT: [string, string] = ['--timeout S', 'seconds until the sandbox is killed'];
const METADATA_OPT: [string, string] = ['--metadata K=V', 'label the sandbox (repeatable)'];
const ENV_OPT: [string, string] = ['--env K=V', "set a variable in the sandbox's commands (repeatable)"];
const SHOW_TOKEN_OPT: [string, string] = [
  '--show-token',
  "include the sandbox's envd access token (hidden otherwise: it is a credential)",
];

const EGRESS_OPTS: [string, string][] = [
  ['--allow-out X', 'allow egress to X: a CIDR, an IP, a domain or *.domain (repeatable; wins over denies)'],
  ['--deny-out Y', 'deny egress to Y: a CIDR or an IP (repeatable; 0.0.0.0/0 denies all)'],
  ['--no-internet', 'deny all egress but what --allow-out names'],
];

const PUSH_OPTS: [string, string][] = [
  [
    '--mode M',
    'full_copy (working tree and .git; the default), shallow_overlay (a shallow clone of HEAD with the working-tree changes on top) or metadata_only (the history; the guest checks HEAD out)',
  ],
  ['--guest-path P', 'where in the sandbox (default /home/user/<repo name>; must be under /home/user)'],
  ['--branch B', 'create and check out branch B in the guest'],
  ['--from REF', 'the branch starts at REF (default HEAD)'],
  ['--read-only', "the tree is owned by root without write bits: unwritable to the sandbox's user"],
];
const EXPORT_OPTS: [string, string][] = [
  ['-o FILE', 'write the patch to FILE (default: stdout)'],
  [
    '--apply',
    'apply the patch to the local repository (three-way); on a conflict nothing is changed and the files are named',
  ],
];

/** Every command, keyed by its words (`sandbox create`); a group's subcommands follow it. */
export const COMMANDS: Record<string, CommandHelp> = {
  run: {
    usage: [
      'kiln run [--template T] [--timeout S] [--env K=V]... -- CMD [ARG...]',
      'kiln run --workspace [PATH] [--mode M] [--guest-path P] [--branch B [--from REF]] [--read-only] [-o FILE | --apply] [...] -- CMD [ARG...]',
    ],
    summary:
      "run a command in a throwaway sandbox: create, stream output, kill; exits with its code (128+N if signal N killed it). With --workspace: push the repository first, run the command in it, export the patch (stdout, where the command's own stdout then goes to stderr; -o FILE; or --apply), kill",
    options: [
      ['--template T', `template to start from (default ${DEFAULT_TEMPLATE}, built on first use)`],
      TIMEOUT_OPT,
      ENV_OPT,
      ['--workspace [PATH]', 'the git repository to work on (default: the current directory)'],
      ...PUSH_OPTS,
      ...EXPORT_OPTS,
    ],
  },
  'workspace push': {
    usage: [
      'kiln workspace push SANDBOX [PATH] [--mode M] [--guest-path P] [--branch B [--from REF]] [--read-only] [--json]',
    ],
    summary:
      "stream a local git repository (PATH, default the current directory) into a running sandbox; a new push replaces the old one; the sandbox's events log it",
    options: [...PUSH_OPTS, JSON_OPT],
  },
  'workspace export': {
    usage: [
      'kiln workspace export SANDBOX [--guest-path P] [--base COMMIT] [-o FILE | --apply [--repo PATH]] [--json]',
    ],
    summary:
      "the binary patch of everything changed in the sandbox's workspace since its base (guest commits, staged, unstaged, untracked files; not ignored ones), built without touching the guest's index; the changed files on stderr",
    options: [
      ['--guest-path P', "the workspace (default: the last push's)"],
      ['--base COMMIT', "diff against COMMIT (default: the push's base)"],
      ...EXPORT_OPTS,
      ['--repo PATH', 'the repository --apply changes (default: the current directory)'],
      ['--json', 'print the base and the changed files as JSON (with -o or --apply)'],
    ],
  },
  'sandbox create': {
    usage: [
      'kiln sandbox create [--template T] [--timeout S] [--metadata K=V]... [--env K=V]... [--allow-out X]... [--deny-out Y]... [--no-internet] [--volume NAME:/PATH]... [--json]',
    ],
    summary: 'start a sandbox and print its id',
    options: [
      ['--template T', `template to start from (default ${DEFAULT_TEMPLATE}, built on first use)`],
      TIMEOUT_OPT,
      METADATA_OPT,
      ENV_OPT,
      ...EGRESS_OPTS,
      ['--volume NAME:/PATH', 'mount volume NAME (kiln volume create) at PATH in the sandbox (repeatable)'],
      SHOW_TOKEN_OPT,
      JSON_OPT,
    ],
  },
  'sandbox list': {
    usage: ['kiln sandbox list [--all] [--state S]... [--metadata K=V]... [--json]'],
    summary: 'list live sandboxes (every state but dead); never prints access tokens',
    options: [
      ['--all', 'include ended (dead) sandboxes'],
      [
        '--state S',
        'only sandboxes in state S (repeatable): creating running pausing paused resuming killing dead',
      ],
      ['--metadata K=V', 'only sandboxes with this label (repeatable)'],
      JSON_OPT,
    ],
  },
  'sandbox get': {
    usage: ['kiln sandbox get ID [--show-token] [--json]'],
    summary: 'show one sandbox; its envd access token only with --show-token (the way to get it)',
    options: [SHOW_TOKEN_OPT, JSON_OPT],
  },
  'sandbox kill': { usage: ['kiln sandbox kill ID'], summary: 'kill a sandbox and free its resources' },
  'sandbox stats': {
    usage: ['kiln sandbox stats ID [--json]'],
    summary: "a sandbox's CPU, memory (RSS, PSS) and disk use",
    options: [JSON_OPT],
  },
  'sandbox url': {
    usage: ['kiln sandbox url ID PORT [--json]'],
    summary:
      "the http URL of guest port PORT through kilnd's envd proxy (what the e2b SDK's getHost(PORT) names)",
    options: [JSON_OPT],
  },
  'sandbox logs': {
    usage: ['kiln sandbox logs ID [--json]'],
    summary: "a sandbox's event log (last 1000 entries)",
    options: [JSON_OPT],
  },
  'sandbox exec': {
    usage: ['kiln sandbox exec ID [--no-stdin] -- CMD [ARG...]'],
    summary:
      "run a command in a sandbox, streaming its output; exits with its code (128+N if signal N killed it). Piped or redirected input (not a terminal) is streamed to the command's stdin, binary-safe: tar c . | kiln sandbox exec ID -- tar x -C DIR",
    options: [['--no-stdin', "don't pass this process's input on: the command reads EOF at once"]],
  },
  'sandbox timeout': {
    usage: ['kiln sandbox timeout ID SECONDS [--json]'],
    summary: 'set the sandbox to end SECONDS from now',
    options: [JSON_OPT],
  },
  'sandbox pause': {
    usage: ['kiln sandbox pause ID [--json]'],
    summary: 'pause a sandbox (snapshot its memory and disk, stop its VM)',
    options: [JSON_OPT],
  },
  'sandbox resume': {
    usage: ['kiln sandbox resume ID [--timeout S] [--json]'],
    summary: 'resume a paused sandbox',
    options: [TIMEOUT_OPT, JSON_OPT],
  },
  'sandbox fork': {
    usage: ['kiln sandbox fork ID [--count N] [--timeout S] [--json]'],
    summary: 'start N copies of a running sandbox; exits 1 if any copy failed',
    options: [['--count N', `how many copies (default ${DEFAULT_FORK_COUNT})`], TIMEOUT_OPT, JSON_OPT],
  },
  'sandbox network': {
    usage: ['kiln sandbox network ID [--allow-out X]... [--deny-out Y]... [--no-internet] [--json]'],
    summary:
      "replace a running or paused sandbox's egress rules (all of them: what no flag names is cleared; no flags = open)",
    options: [...EGRESS_OPTS, JSON_OPT],
  },
  'snapshot create': {
    usage: ['kiln snapshot create SANDBOX [--name N] [--json]'],
    summary: 'snapshot a running sandbox (it keeps running)',
    options: [['--name N', 'a name to restore it by'], JSON_OPT],
  },
  'snapshot list': {
    usage: ['kiln snapshot list [--kind K] [--json]'],
    summary: 'list snapshots',
    options: [['--kind K', 'only this kind: template snapshot pause fork'], JSON_OPT],
  },
  'snapshot get': {
    usage: ['kiln snapshot get SNAPSHOT [--json]'],
    summary: 'show one snapshot (by id or name)',
    options: [JSON_OPT],
  },
  'snapshot rm': {
    usage: ['kiln snapshot rm SNAPSHOT'],
    summary: 'delete a snapshot (by id or name); sandboxes running on it are not affected',
  },
  'snapshot restore': {
    usage: ['kiln snapshot restore SNAPSHOT [--timeout S] [--metadata K=V]... [--env K=V]... [--json]'],
    summary: 'start a new sandbox from a snapshot and print its id',
    options: [TIMEOUT_OPT, METADATA_OPT, ENV_OPT, SHOW_TOKEN_OPT, JSON_OPT],
  },
  'snapshot export': {
    usage: ['kiln snapshot export SNAPSHOT -o FILE.tar'],
    summary: 'write a snapshot to a standalone archive',
    options: [['-o, --output FILE', 'the archive to write']],
  },
  'snapshot import': {
    usage: ['kiln snapshot import FILE.tar [--json]'],
    summary: 'import a snapshot archive made by kiln snapshot export',
    options: [JSON_OPT],
  },
  'template list': { usage: ['kiln template list [--json]'], summary: 'list templates', options: [JSON_OPT] },
  'template get': {
    usage: ['kiln template get NAME [--json]'],
    summary: 'a template built from steps (Dockerfile, e2b SDK) and its builds',
    options: [JSON_OPT],
  },
  'template pool': {
    usage: ['kiln template pool [NAME [SIZE | --reset]] [--json]'],
    summary:
      'warm pools: restored VMs kept ready so a create only sets the guest up; no name lists them, NAME shows one, SIZE (0..64) sets it, --reset goes back to the default ($KILN_WARM_POOL for base, else 0)',
    options: [['--reset', 'back to the default size'], JSON_OPT],
  },
  'template rm': {
    usage: ['kiln template rm NAME [--json]'],
    summary: 'delete a template built from steps, and the cached layers no other template uses',
    options: [JSON_OPT],
  },
  'template gc': {
    usage: ['kiln template gc [--dry-run] [--grace S] [--json]'],
    summary:
      'remove the hidden templates (OCI image bases, resource twins, deleted ones) and build layers that nothing uses (no template, sandbox, snapshot, warm pool or build) and that went unused for the grace period; kilnd also does it hourly ($KILN_TEMPLATE_GC_EVERY_S)',
    options: [
      ['--dry-run', 'only list what would be removed; nothing changes'],
      ['--grace S', 'seconds without use before something may go (default $KILN_TEMPLATE_GC_AFTER_S, a day)'],
      JSON_OPT,
    ],
  },
  'template build': {
    usage: [
      'kiln template build [--name N] [--memory SIZE] [--vcpus N] [--json]',
      'kiln template build -f Dockerfile --name N [--start-cmd C] [--ready-cmd R] [--build-arg K=V]... [--no-cache] [--registry-user U --registry-password-stdin] [--json] [CONTEXT]',
    ],
    summary:
      'boot the image, wait for the agent and snapshot it as a template; with -f, build from a Dockerfile (FROM a kiln template or a registry image host:port/name[:tag]; RUN, COPY/ADD, ENV, ARG, WORKDIR, USER, CMD/ENTRYPOINT) with a layer cache',
    options: [
      ['-f, --file F', 'the Dockerfile; COPY sources are read from CONTEXT (default .)'],
      ['--start-cmd C', 'start command (default: CMD/ENTRYPOINT); runs in the template, captured running'],
      [
        '--ready-cmd R',
        'the template is snapshotted once this exits 0 (deadline $KILN_TEMPLATE_READY_TIMEOUT_MS)',
      ],
      ['--build-arg K=V', 'a value for an ARG'],
      ['--no-cache', 'run every step again'],
      [
        '--registry-user U',
        'user name for the registry of a FROM host:port/name image (needs --registry-password-stdin)',
      ],
      [
        '--registry-password-stdin',
        'read that registry password (or token) from standard input; kilnd keeps it in memory for the build only',
      ],
      ['--name N', `template name (default ${DEFAULT_TEMPLATE})`],
      [
        '--memory SIZE',
        `memory of its sandboxes, e.g. 512M or 1G; a bare number is MiB (default ${DEFAULT_MEMORY_MIB})`,
      ],
      ['--vcpus N', `vCPUs of its sandboxes (default ${DEFAULT_VCPUS})`],
      JSON_OPT,
    ],
  },
  'image build': {
    usage: [
      'kiln image build [--name NAME] [--package PKG]... [--disk SIZE] [--force] [--json]',
      'kiln image build --from-image HOST:PORT/NAME[:TAG|@sha256:D] [--name NAME] [--insecure-registry HOST:PORT]... [--registry-user U --registry-password-stdin] [--force] [--json]',
    ],
    summary: 'build a guest image into the cache (runs here, not in the daemon)',
    options: [
      ['--name NAME', 'image name (default default; with --from-image: the repository and tag)'],
      ['--package PKG', 'a Debian package to add (repeatable)'],
      [
        '--disk SIZE',
        "the root filesystem's size, e.g. 4G or 2048M; a bare number is MiB (default 2G, from 512M to 256G)",
      ],
      ['--from-image REF', 'use an OCI image from a registry as the root filesystem (linux/amd64)'],
      ['--insecure-registry H:P', 'allow plain HTTP to this registry (loopback ones always may)'],
      ['--registry-user U', 'registry user name (password from --registry-password-stdin)'],
      ['--registry-password-stdin', 'read the registry password from standard input'],
      ['--force', 'rebuild even if cached'],
      JSON_OPT,
    ],
  },
  'image list': { usage: ['kiln image list [--json]'], summary: 'list built images', options: [JSON_OPT] },
  'api-key create': {
    usage: ['kiln api-key create [--name N] [--admin] [--json]'],
    summary:
      'issue a key for the E2B API (shown once); it sees only the sandboxes, snapshots and templates it creates',
    options: [
      ['--name N', `a label (default ${DEFAULT_API_KEY_NAME})`],
      ['--admin', 'the key sees everything'],
      JSON_OPT,
    ],
  },
  'api-key list': {
    usage: ['kiln api-key list [--json]'],
    summary: 'list API keys (prefixes only)',
    options: [JSON_OPT],
  },
  'api-key delete': { usage: ['kiln api-key delete ID'], summary: 'revoke an API key' },
  'volume create': {
    usage: ['kiln volume create NAME [--json]'],
    summary: 'create a volume (E2B volumes): sandboxes mount it at create (E2B volumeMounts); prints its id',
    options: [JSON_OPT],
  },
  'volume list': {
    usage: ['kiln volume list [--json]'],
    summary: 'list volumes and the live sandboxes that mount them',
    options: [JSON_OPT],
  },
  'volume rm': {
    usage: ['kiln volume rm ID|NAME [--json]'],
    summary: 'delete a volume and its files (refused while a running or paused sandbox mounts it)',
    options: [JSON_OPT],
  },
  'e2b env': {
    usage: ['kiln e2b env'],
    summary: 'print the exports that point the e2b SDK at this kiln: eval "$(kiln e2b env)"',
  },
  dashboard: {
    usage: ['kiln dashboard [--link] [--open] [--json]'],
    summary:
      "print the URL of kilnd's web dashboard (127.0.0.1; sign in with an API key); starts kilnd if needed",
    options: [
      ['--link', 'print a one-time sign-in link instead (good for two minutes; sees everything)'],
      ['--open', 'also try to open it in a browser (xdg-open)'],
      JSON_OPT,
    ],
  },
  daemon: {
    usage: ['kiln daemon [--detach]'],
    summary: 'run kilnd in the foreground (or start it in the background)',
    options: [['--detach', 'start it in the background and return']],
  },
  'daemon stop': { usage: ['kiln daemon stop'], summary: 'stop the running kilnd' },
  help: { usage: ['kiln help [COMMAND [SUBCOMMAND]]'], summary: 'print help (same as --help)' },
};

/** Command groups: first word -> subcommand words (empty: the word is a command by itself). */
export const GROUPS: Record<string, string[]> = {};
for (const path of Object.keys(COMMANDS)) {
  const [head = '', sub] = path.split(' ');
  const subs = (GROUPS[head] ??= []);
  if (sub) subs.push(sub);
}

/** Alternative spellings of subcommands. */
const ALIASES: Record<string, string> = { 'image ls': 'image list', 'volume ls': 'volume list' };

export const EXIT_CODES = `exit codes:
  0      success
  1      the operation failed (kiln: CODE: message, with the daemon's op id)
  2      bad usage or an invalid argument
  130    interrupted (Ctrl-C) or cancelled
  N      run, sandbox exec: the command's own exit code
  128+N  run, sandbox exec, daemon: killed by signal N (e.g. 137 = SIGKILL, 143 = SIGTERM)`;

export const USAGE = `kiln — microVM sandboxes on one host

usage:
${Object.values(COMMANDS)
  .flatMap((c) => c.usage)
  .map((u) => `  ${u}`)
  .join('\n')}

Every command takes --help (or: kiln help COMMAND [SUBCOMMAND]).

${EXIT_CODES}

The daemon starts by itself when a command needs it. Environment:
  KILN_STATE_DIR   state, sockets, VMs (default ~/.local/state/kiln)
  KILN_CACHE_DIR   images, Node, downloads (default ~/.cache/kiln)
  KILN_ACCEL       kvm | tcg | auto (default auto: KVM only if a probe guest boots fast)
`;

function render(path: string, c: CommandHelp): string {
  const w = Math.max(0, ...(c.options ?? []).map(([f]) => f.length));
  const opts = (c.options ?? []).map(([f, m]) => `  ${f.padEnd(w)}  ${m}`);
  return [
    `usage: ${c.usage.join('\n       ')}`,
    '',
    c.summary,
    ...(opts.length ? ['', 'options:', ...opts, `  ${'--help'.padEnd(w)}  print this help`] : []),
    ...(path === 'run' || path === 'sandbox exec' || path === 'daemon' ? ['', EXIT_CODES] : []),
    '',
  ].join('\n');
}

/**
 * The help for the command named by `words` (`['sandbox', 'create']`), for a group (`['sandbox']`:
 * its subcommands' usage), or undefined when no such command exists.
 */
export function helpFor(words: string[]): string | undefined {
  const [head, sub] = words;
  if (head === undefined) return USAGE;
  const subs = GROUPS[head];
  if (!subs) return undefined;
  if (sub !== undefined && subs.length > 0) {
    const path = ALIASES[`${head} ${sub}`] ?? `${head} ${sub}`;
    const c = COMMANDS[path];
    return c ? render(path, c) : undefined;
  }
  const own = COMMANDS[head];
  if (own) {
    // `daemon` is a command with one subcommand: its help lists both.
    const more = subs.map((s) => COMMANDS[`${head} ${s}`]?.usage.join('\n       ') ?? '');
    return more.length
      ? `${render(head, own)}\nalso:\n${more.map((m) => `  ${m}`).join('\n')}\n`
      : render(head, own);
  }
  const lines = subs.flatMap((s) => (COMMANDS[`${head} ${s}`]?.usage ?? []).map((u) => `  ${u}`));
  return `usage:\n${lines.join('\n')}\n\nkiln ${head} SUBCOMMAND --help for its options.\n`;
}
