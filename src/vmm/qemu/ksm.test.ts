import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { enableKsm } from './ksm.ts';
import { KilnError } from '../../core/errors.ts';

describe('enableKsm', () => {
  it('starts ksmd and merges zeroed pages into the zero page; says whether it was off', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-ksm-'));
    try {
      await writeFile(join(dir, 'run'), '0\n');
      await writeFile(join(dir, 'use_zero_pages'), '0\n');
      assert.deepEqual(await enableKsm(dir), { wasOff: true });
      assert.equal(await readFile(join(dir, 'run'), 'utf8'), '1');
      assert.equal(await readFile(join(dir, 'use_zero_pages'), 'utf8'), '1');
      assert.deepEqual(await enableKsm(dir), { wasOff: false });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a kernel without KSM is a clear missing_tool error', async () => {
    await assert.rejects(enableKsm('/nonexistent/ksm'), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, 'missing_tool');
      assert.match(e.message, /KILN_KSM=on but this kernel has no KSM/);
      return true;
    });
  });
});
