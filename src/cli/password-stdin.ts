/**
 * `--registry-user U --registry-password-stdin` (as `docker login --password-stdin`): the
 * password comes from standard input, never the command line (where `ps` and shell history would
 * show it). No side effects at import.
 */
import type { Readable } from 'node:stream';
import { UsageError } from './args.ts';

/** All of `input` up to its end, one trailing newline dropped (`echo "$TOKEN" | kiln ...`). */
export async function readPasswordStdin(input: Readable = process.stdin): Promise<string> {
  let s = '';
  for await (const c of input) s += String(c);
  return s.replace(/\r?\n$/, '');
}

/**
 * The registry credentials of `kiln template build -f`: none, or the user with the password read
 * from `input`; a user without `--registry-password-stdin` (or the reverse), or an empty
 * password, is a usage error.
 */
export async function registryCredentials(
  user: string | undefined,
  passwordStdin: boolean,
  input: Readable = process.stdin,
): Promise<{ username: string; password: string } | undefined> {
  if (user === undefined) {
    if (passwordStdin) throw new UsageError('--registry-password-stdin needs --registry-user');
    return undefined;
  }
  if (!passwordStdin)
    throw new UsageError(
      '--registry-user needs --registry-password-stdin (the password is read from standard input)',
    );
  const password = await readPasswordStdin(input);
  if (password === '') throw new UsageError('--registry-password-stdin: standard input held no password');
  return { username: user, password };
}
