/**
 * The common Dockerfile subset, parsed into the step list the template build API takes (E2B's
 * `TemplateBuildStartV2`, see template-steps.ts): FROM (a kiln template name, or `base`), RUN,
 * COPY/ADD of local files, ENV, ARG, WORKDIR, USER, CMD/ENTRYPOINT (the start command). Other
 * instructions are refused by name and line. Steps start as root, as in Docker. Pure: the caller reads the file and hashes the
 * COPY sources.
 */
import { invalidArgument } from './errors.ts';

/** A COPY as parsed: the hash of its files is the caller's to fill in. */
export interface DockerfileCopy {
  type: 'COPY';
  src: string;
  dest: string;
  user?: string;
  mode?: string;
}

export type DockerfileStep = { type: 'RUN' | 'ENV' | 'WORKDIR' | 'USER'; args: string[] } | DockerfileCopy;

export interface ParsedDockerfile {
  /** FROM's reference: a kiln template (or an OCI image reference, which kiln does not build yet). */
  from: string;
  steps: DockerfileStep[];
  /** CMD / ENTRYPOINT as one shell command. */
  startCmd?: string;
}

const REFUSED = new Set([
  'EXPOSE',
  'VOLUME',
  'HEALTHCHECK',
  'ONBUILD',
  'STOPSIGNAL',
  'SHELL',
  'LABEL',
  'MAINTAINER',
]);

/** Joins continuation lines; drops comments and blank lines; keeps each instruction's line number. */
function logicalLines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let cur: { line: number; text: string } | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (!cur && (t === '' || t.startsWith('#'))) return;
    if (cur && t.startsWith('#')) return;
    const cont = t.endsWith('\\');
    const body = cont ? t.slice(0, -1) : t;
    if (cur) cur.text += ' ' + body;
    else cur = { line: i + 1, text: body };
    if (!cont) {
      out.push({ line: cur.line, text: cur.text.trim() });
      cur = undefined;
    }
  });
  if (cur) out.push({ line: cur.line, text: cur.text.trim() });
  return out;
}

/** `["a", "b"]` (exec form) or undefined for the shell form. */
function execForm(rest: string, at: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(rest);
  } catch {
    throw invalidArgument(at, 'is not valid JSON exec form');
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    throw invalidArgument(at, 'exec form must be an array of strings');
  return v as string[];
}

const shq = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'"'"'`)}'`);

/** `$VAR` and `${VAR}` from ARG and ENV values known so far (unknown ones stay as written). */
function expand(s: string, vars: Map<string, string>): string {
  return s.replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a: string | undefined, b: string | undefined) => {
    const v = vars.get(a ?? b ?? '');
    return v ?? m;
  });
}

/** `K=V K2="v 2"` or the legacy `K V`. */
function keyValues(rest: string, at: string): [string, string][] {
  if (!rest.includes('=')) {
    const [k, ...v] = rest.split(/\s+/);
    if (!k) throw invalidArgument(at, 'needs a name');
    return [[k, v.join(' ')]];
  }
  const out: [string, string][] = [];
  const re = /(\w+)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(rest)) !== null) {
    let v = m[2] ?? '';
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    else if (v.startsWith("'")) v = v.slice(1, -1);
    out.push([m[1] ?? '', v]);
  }
  if (out.length === 0) throw invalidArgument(at, 'needs NAME=value');
  return out;
}

/** COPY/ADD `[--chown=U] [--chmod=M] SRC... DEST`: one step per source. */
function copySteps(rest: string, at: string, vars: Map<string, string>): DockerfileCopy[] {
  const words = rest.split(/\s+/).filter(Boolean);
  let user: string | undefined;
  let mode: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift() ?? '';
    const [name, val] = flag.slice(2).split('=', 2);
    if (name === 'chown' && val) user = val.split(':')[0];
    else if (name === 'chmod' && val) mode = val;
    else throw invalidArgument(at, `flag ${flag} is not supported`);
  }
  const ex = execForm(words.join(' '), at);
  const list = (ex ?? words).map((w) => expand(w, vars));
  if (list.length < 2) throw invalidArgument(at, 'needs a source and a destination');
  const dest = list.at(-1) ?? '';
  const srcs = list.slice(0, -1);
  return srcs.map((src) => {
    if (/^[a-z]+:\/\//i.test(src)) throw invalidArgument(at, `remote sources (${src}) are not supported`);
    if (/[*?[]/.test(src)) throw invalidArgument(at, `wildcards (${src}) are not supported`);
    return {
      type: 'COPY' as const,
      src: src.replace(/^\.\//, ''),
      dest: srcs.length > 1 && !dest.endsWith('/') ? `${dest}/` : dest,
      ...(user ? { user } : {}),
      ...(mode ? { mode } : {}),
    };
  });
}

/** Parses a Dockerfile; `args` are --build-arg values. */
export function parseDockerfile(text: string, args: Record<string, string> = {}): ParsedDockerfile {
  const vars = new Map<string, string>();
  const runArgs = new Map<string, string>();
  let from: string | undefined;
  // Docker runs steps as root until USER says otherwise (E2B's builder starts as `user`).
  const steps: DockerfileStep[] = [{ type: 'USER', args: ['root'] }];
  let entrypoint: string[] | string | undefined;
  let cmd: string[] | string | undefined;
  for (const { line, text: t } of logicalLines(text)) {
    const m = /^(\S+)\s*(.*)$/.exec(t);
    const ins = (m?.[1] ?? '').toUpperCase();
    const rest = m?.[2] ?? '';
    const at = `Dockerfile line ${String(line)} (${ins})`;
    if (from === undefined && ins !== 'FROM' && ins !== 'ARG') throw invalidArgument(at, 'comes before FROM');
    switch (ins) {
      case 'FROM': {
        if (from !== undefined) throw invalidArgument(at, 'multi-stage builds are not supported');
        const parts = rest.split(/\s+/);
        if (!parts[0] || (parts.length > 1 && parts[1]?.toUpperCase() !== 'AS') || rest.startsWith('--'))
          throw invalidArgument(at, 'needs one reference (FROM ref [AS name])');
        from = expand(parts[0], vars);
        break;
      }
      case 'ARG': {
        const [[k, v] = ['', '']] = keyValues(rest, at);
        vars.set(k, args[k] ?? v);
        // As in Docker: an ARG after FROM is in the environment of the RUN steps after it (and
        // in their cache keys), not in the image's; one before FROM is for FROM alone.
        if (from !== undefined) runArgs.set(k, args[k] ?? v);
        break;
      }
      case 'ENV': {
        const kv = keyValues(rest, at).map(([k, v]): [string, string] => [k, expand(v, vars)]);
        for (const [k, v] of kv) vars.set(k, v);
        steps.push({ type: 'ENV', args: kv.flat() });
        break;
      }
      case 'RUN': {
        if (rest.startsWith('--'))
          throw invalidArgument(at, `RUN flags (${rest.split(' ')[0] ?? ''}) are not supported`);
        const ex = execForm(rest, at);
        const env = [...runArgs].map(([k, v]) => shq(`${k}=${v}`));
        const cmd = ex ? ex.map(shq).join(' ') : rest;
        steps.push({ type: 'RUN', args: [env.length ? `export ${env.join(' ')}; ${cmd}` : cmd] });
        break;
      }
      case 'COPY':
      case 'ADD':
        steps.push(...copySteps(rest, at, vars));
        break;
      case 'WORKDIR':
        steps.push({ type: 'WORKDIR', args: [expand(rest, vars)] });
        break;
      case 'USER':
        steps.push({ type: 'USER', args: [expand(rest, vars).split(':')[0] ?? ''] });
        break;
      case 'CMD':
        cmd = execForm(rest, at) ?? rest;
        break;
      case 'ENTRYPOINT':
        entrypoint = execForm(rest, at) ?? rest;
        break;
      default:
        throw invalidArgument(
          at,
          REFUSED.has(ins) ? `${ins} is not supported by kiln template builds` : `unknown instruction ${ins}`,
        );
    }
  }
  if (from === undefined) throw invalidArgument('Dockerfile', 'has no FROM');
  const startCmd = startCommand(entrypoint, cmd);
  // As E2B's fromDockerfile: a Dockerfile that sets no USER (WORKDIR) leaves its sandboxes to
  // `user` (/home/user), not to the root that ran its steps; the last ones are their defaults.
  if (!steps.slice(1).some((x) => x.type === 'USER')) steps.push({ type: 'USER', args: ['user'] });
  if (!steps.some((x) => x.type === 'WORKDIR')) steps.push({ type: 'WORKDIR', args: ['/home/user'] });
  return { from, steps, ...(startCmd ? { startCmd } : {}) };
}

/** ENTRYPOINT + CMD as Docker combines them, as one shell command. */
function startCommand(
  ep: string[] | string | undefined,
  cmd: string[] | string | undefined,
): string | undefined {
  const sh = (x: string[] | string): string => (typeof x === 'string' ? x : x.map(shq).join(' '));
  if (ep === undefined) return cmd === undefined ? undefined : sh(cmd);
  if (typeof ep === 'string') return ep;
  return [sh(ep), ...(Array.isArray(cmd) ? [sh(cmd)] : [])].join(' ');
}
