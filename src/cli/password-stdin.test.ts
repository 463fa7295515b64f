import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { UsageError } from './args.ts';
import { registryCredentials } from './password-stdin.ts';

const stdin = (s: string): Readable => Readable.from([Buffer.from(s)]);

describe('--registry-user / --registry-password-stdin', () => {
  it('the password is standard input without its trailing newline', async () => {
    assert.deepEqual(await registryCredentials('robot', true, stdin('tok:en with spaces\n')), {
      username: 'robot',
      password: 'tok:en with spaces',
    });
    assert.equal((await registryCredentials('robot', true, stdin('p\r\n')))?.password, 'p');
  });

  it('neither: no credentials; one without the other, or an empty password: usage errors', async () => {
    assert.equal(await registryCredentials(undefined, false, stdin('ignored')), undefined);
    const cases: [string | undefined, boolean, string, RegExp][] = [
      [undefined, true, 'p', /--registry-password-stdin needs --registry-user/],
      ['robot', false, 'p', /--registry-user needs --registry-password-stdin/],
      ['robot', true, '\n', /standard input held no password/],
    ];
    for (const [user, flag, input, re] of cases)
      await assert.rejects(
        registryCredentials(user, flag, stdin(input)),
        (e: Error) => e instanceof UsageError && re.test(e.message),
      );
  });
});
