import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

test('generated protobuf code matches proto/ (run `npm run gen` after editing a .proto)', async () => {
  const out = await mkdtemp(join(tmpdir(), 'kiln-gen-'));
  try {
    const bin = join(ROOT, 'node_modules/.bin');
    execFileSync(join(bin, 'buf'), ['generate', '-o', out], {
      cwd: ROOT,
      stdio: 'pipe',
      env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
    });
    const fresh = join(out, 'src/core/envd');
    const committed = join(ROOT, 'src/core/envd');
    assert.deepEqual(await files(fresh), await files(committed));
    for (const f of await files(committed)) {
      assert.equal(await readFile(join(fresh, f), 'utf8'), await readFile(join(committed, f), 'utf8'), f);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
