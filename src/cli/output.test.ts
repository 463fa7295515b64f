import assert from 'node:assert/strict';
import { test } from 'node:test';
import { childExitCode, commandExitCode, redact } from './output.ts';

test('a command killed by signal N exits 128+N, whatever reported it', () => {
  assert.equal(commandExitCode({ exitCode: 0, status: 'exit status 0' }), 0);
  assert.equal(commandExitCode({ exitCode: 3, status: 'exit status 3' }), 3);
  assert.equal(commandExitCode({ exitCode: -1, status: 'signal: killed' }), 137);
  assert.equal(commandExitCode({ exitCode: -1, status: 'signal: terminated' }), 143);
  assert.equal(commandExitCode({ exitCode: -1, status: 'signal: interrupt' }), 130);
  assert.equal(commandExitCode({ exitCode: -1, status: 'signal: segmentation fault' }), 139);
  // The guest agent names signals Go has no words for by their Node name.
  assert.equal(commandExitCode({ exitCode: -1, status: 'signal: SIGBUS' }), 135);
  // Nothing to go on: counted as SIGKILL, the way the guest ends a command that overran.
  assert.equal(commandExitCode({ exitCode: -1, status: 'mystery' }), 137);
  assert.equal(childExitCode(0, null), 0);
  assert.equal(childExitCode(4, null), 4);
  assert.equal(childExitCode(null, 'SIGTERM'), 143);
  assert.equal(childExitCode(null, 'SIGKILL'), 137);
});

test('redact drops credential fields unless asked to show them', () => {
  const s = { sandboxId: 'a', envdAccessToken: 't', ownerKeyId: 'k', clientSecret: 'x', password: 'p' };
  assert.deepEqual(redact(s), { sandboxId: 'a', ownerKeyId: 'k' });
  assert.deepEqual(redact(s, true), s);
});
