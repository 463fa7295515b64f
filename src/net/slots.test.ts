/**
 * destroySlot as root on the host's own namespaces (names of a temp state dir's instance tag, so
 * nobody else's): a slot already gone, half gone, or torn down by several callers at once is
 * removed without an error and leaves nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { instanceTag, slotNames } from './names.ts';
import { destroySlot } from './slots.ts';
import { hostSlots } from './testing/host-slots.ts';

/** A veth pair with its peer in a new namespace, as createSlot makes it (without rules). */
function makePair(tag: string, i: number): void {
  const n = slotNames(tag, i);
  execFileSync('ip', ['netns', 'add', n.ns]);
  execFileSync('ip', ['link', 'add', n.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.ns]);
}

describe('destroySlot (root, real namespaces)', { skip: process.getuid?.() !== 0 && 'needs root' }, () => {
  let state = '';
  let tag = '';
  before(async () => {
    state = await mkdtemp(join(tmpdir(), 'kiln-slots-'));
    tag = instanceTag(state);
  });
  after(async () => {
    for (const i of new Set([...hostSlots(tag).namespaces, ...hostSlots(tag).links]))
      await destroySlot(slotNames(tag, i));
    await rm(state, { recursive: true, force: true });
  });

  it('removes a slot that was never made, or whose namespace alone is left', async () => {
    await destroySlot(slotNames(tag, 1));
    execFileSync('ip', ['netns', 'add', slotNames(tag, 2).ns]);
    await destroySlot(slotNames(tag, 2));
    assert.deepEqual(hostSlots(tag), { namespaces: [], links: [] });
  });

  it('several callers tearing the same slots down at once all succeed and nothing is left', async () => {
    // The race CI met: a link listed, then deleted by somebody else before `ip link del` ran
    // ("RTNETLINK answers: No such device"). Many rounds so the interleaving happens.
    for (let round = 0; round < 5; round++) {
      const slots = [10, 11, 12, 13, 14, 15];
      for (const i of slots) makePair(tag, i);
      assert.deepEqual(hostSlots(tag).links, slots);
      await Promise.all(slots.flatMap((i) => [1, 2, 3].map(() => destroySlot(slotNames(tag, i)))));
      assert.deepEqual(hostSlots(tag), { namespaces: [], links: [] });
    }
  });
});
