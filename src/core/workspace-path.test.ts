import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from './errors.ts';
import { sh, stagePath, workspacePath } from './workspace-path.ts';

const refused = (f: () => unknown, re: RegExp): void => {
  assert.throws(
    f,
    (e: unknown) => e instanceof KilnError && e.code === 'invalid_argument' && re.test(e.message),
  );
};

describe('workspace guest paths', () => {
  it('defaults to /home/user/<repo name> and normalises what is given', () => {
    assert.equal(workspacePath(undefined, 'kiln'), '/home/user/kiln');
    assert.equal(workspacePath('/home/user/a/b/', undefined), '/home/user/a/b');
    assert.equal(workspacePath('/home/user/x/../y', 'r'), '/home/user/y');
    assert.equal(workspacePath('/home/user//z', 'r'), '/home/user/z');
  });
  it('refuses paths escaping the home, the home itself, relative paths and bad names', () => {
    refused(() => workspacePath('/home/user/../root/x', 'r'), /outside the sandbox user's home/);
    refused(() => workspacePath('/etc', 'r'), /outside/);
    refused(() => workspacePath('/home/user', 'r'), /outside/);
    refused(() => workspacePath('/home/user/', 'r'), /outside/);
    refused(() => workspacePath('/home/username/x', 'r'), /outside/);
    refused(() => workspacePath('repo', 'r'), /relative/);
    refused(() => workspacePath('/home/user/a\nb', 'r'), /line break/);
    refused(() => workspacePath(undefined, '..'), /cannot name/);
    refused(() => workspacePath(undefined, undefined), /cannot name/);
  });
  it('stages beside the target and quotes for the shell', () => {
    assert.equal(stagePath('/home/user/a/repo', 'op_1/x'), '/home/user/a/.kiln-ws-op_1x');
    assert.equal(sh("it's"), `'it'\\''s'`);
  });
});
