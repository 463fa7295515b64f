import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BOOTSTRAP_KERNEL_ARG, bootstrapHashFromCmdline, tokenSha256 } from './envd-auth.ts';

test('the bootstrap hash is read from the kernel command line, and only a well-formed one', () => {
  const h = tokenSha256('secret');
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(
    bootstrapHashFromCmdline(
      `console=ttyS0 root=/dev/vda rw quiet ${BOOTSTRAP_KERNEL_ARG}=${h} tsc_early_khz=1\n`,
    ),
    h,
  );
  assert.equal(bootstrapHashFromCmdline('console=ttyS0 root=/dev/vda'), undefined);
  assert.equal(bootstrapHashFromCmdline(`${BOOTSTRAP_KERNEL_ARG}=abc`), undefined, 'too short');
  assert.equal(bootstrapHashFromCmdline(`${BOOTSTRAP_KERNEL_ARG}=${h.toUpperCase()}`), undefined);
  assert.equal(bootstrapHashFromCmdline(`x${BOOTSTRAP_KERNEL_ARG}=${h}`), undefined);
});
