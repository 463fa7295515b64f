import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TemplateRecord } from '../core/domain.ts';
import { TemplateEnsurer } from './ensure-template.ts';

const tpl = (name: string, snapshotId: string | null): TemplateRecord => ({
  id: `tpl-${name}`,
  name,
  imageKey: 'img',
  memoryMiB: 512,
  vcpus: 1,
  snapshotId,
  createdAt: '2026-01-01T00:00:00.000Z',
  ownerKeyId: null,
});

/** A service whose templates are `list`; a template is ready when its snapshot is in `ready`. */
function setUp(list: TemplateRecord[], ready: Set<string>) {
  const built: { name: string; res: { memoryMiB: number; vcpus: number } }[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const ensurer = new TemplateEnsurer(
    { templates: () => list, templateReady: (t) => t.snapshotId !== null && ready.has(t.snapshotId) },
    async (name, res) => {
      built.push({ name, res });
      await gate;
      const t = tpl(name, 'snap-new');
      ready.add('snap-new');
      list.push(t);
      return t;
    },
  );
  return { ensurer, built, release };
}

describe('TemplateEnsurer', () => {
  it('builds the default template with the default resources once, however many creates wait', async () => {
    const { ensurer, built, release } = setUp([], new Set());
    const waiting = [ensurer.ensure('base', 'op-1'), ensurer.ensure('base', 'op-2')];
    release();
    await Promise.all(waiting);
    assert.deepEqual(built, [{ name: 'base', res: { memoryMiB: 512, vcpus: 1 } }]);
    await ensurer.ensure('base', 'op-3');
    assert.equal(built.length, 1, 'ready now: not built again');
  });

  it('rebuilds a default template that is not ready (no snapshot, or one without a guest token)', async () => {
    const { ensurer, built, release } = setUp([tpl('base', 'snap-old')], new Set());
    release();
    await ensurer.ensure('base', 'op');
    assert.deepEqual(
      built.map((b) => b.name),
      ['base'],
    );
  });

  it('never builds another template, ready or not (the create answers for it)', async () => {
    const { ensurer, built, release } = setUp([tpl('mine', null)], new Set());
    release();
    await ensurer.ensure('mine', 'op');
    await ensurer.ensure('other', 'op');
    assert.deepEqual(built, []);
  });

  it('a failed build fails the waiting creates and is tried again by the next one', async () => {
    let calls = 0;
    const ensurer = new TemplateEnsurer({ templates: () => [], templateReady: () => false }, () => {
      calls++;
      return Promise.reject(new Error('no image'));
    });
    await assert.rejects(ensurer.ensure('base', 'op'), /no image/);
    await assert.rejects(ensurer.ensure('base', 'op'), /no image/);
    assert.equal(calls, 2);
  });
});
