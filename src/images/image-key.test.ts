import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, realpath, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bundleAgent } from './agent-bundle.ts';
import { imageKey, recipeDigest, type ImageInputs } from './image-key.ts';
import { defaultImageSpec } from './spec.ts';

const CHECKOUT = fileURLToPath(new URL('../..', import.meta.url));

/** Copies what the agent bundle is made of to `dir`; node_modules is reached through `modules`. */
async function checkoutAt(dir: string, modules: string): Promise<void> {
  await mkdir(join(dir, 'src'), { recursive: true });
  for (const d of ['src/guest', 'src/core']) await cp(join(CHECKOUT, d), join(dir, d), { recursive: true });
  for (const f of ['package.json', 'tsconfig.json']) await cp(join(CHECKOUT, f), join(dir, f));
  await symlink(modules, join(dir, 'node_modules'));
}

test('the image key depends on content, not on where kiln is checked out', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'kiln-key-'));
  try {
    // Two checkouts at different depths: one links node_modules straight to the installed one,
    // the other through a link in a third place (as a git worktree sharing main's modules does).
    const a = join(tmp, 'a');
    const b = join(tmp, 'deeper', 'clone-b');
    const realModules = await realpath(join(CHECKOUT, 'node_modules'));
    await mkdir(join(tmp, 'shared'));
    await symlink(realModules, join(tmp, 'shared', 'node_modules'));
    await checkoutAt(a, realModules);
    await checkoutAt(b, join(tmp, 'shared', 'node_modules'));

    const [agentA, agentB, agentHere] = await Promise.all([bundleAgent(a), bundleAgent(b), bundleAgent()]);
    for (const [name, text] of [
      ['a', agentA],
      ['b', agentB],
    ] as const) {
      assert.ok(!text.includes(tmp), `bundle ${name} names no path of its checkout`);
      assert.ok(!text.includes(realModules), `bundle ${name} names no absolute node_modules path`);
    }
    assert.match(
      agentA,
      /^\/\/ node_modules\/busboy\/lib\/utils\.js$/m,
      'modules named relative to the checkout',
    );
    assert.equal(agentA, agentB);
    assert.equal(agentHere, agentA, 'this checkout bundles the same agent as its copies');

    const inputs = async (agent: string): Promise<ImageInputs> => ({
      spec: defaultImageSpec(),
      kernel: { pkg: 'linux-image-6.1.0-1-cloud-amd64', version: '6.1.1-1' },
      agent,
      initramfsInit: '#!/bin/sh\n',
      kilnInit: '#!/bin/sh\n',
      node: { version: process.version, sha256: '0'.repeat(64) },
      recipe: await recipeDigest(),
    });
    assert.equal(imageKey(await inputs(agentA)), imageKey(await inputs(agentB)));
    assert.notEqual(
      imageKey(await inputs(agentA)),
      imageKey(await inputs(`${agentA}\n`)),
      'the agent is an input',
    );
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
