/**
 * The behaviour every `Store` must show, part one: templates, sandboxes, snapshots and their
 * owners, with the record builders both parts use. Part two (store-journal.contract.ts): the
 * journal, events, API keys, retention and reopening. Both run against SQLite in memory and on disk.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type SandboxRecord,
  type SnapshotRecord,
  type TemplateBuildRecord,
  type TemplateRecord,
} from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { OPEN_NETWORK } from '../core/network-policy.ts';
import type { Store } from './store.ts';

export interface StoreFixture {
  open: () => Store;
  /** Closes and opens the same store again (undefined for in-memory stores). */
  reopen?: (s: Store) => Store;
}

export const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof KilnError, String(e));
    return e.code;
  }
  return 'ok';
};

export const T0 = '2026-01-01T00:00:00.000Z';
export const T1 = '2026-01-02T00:00:00.000Z';
export const template = (o: Partial<TemplateRecord> = {}): TemplateRecord => ({
  id: 'tpl-1',
  name: 'base',
  imageKey: 'img-abc',
  memoryMiB: 512,
  vcpus: 1,
  snapshotId: null,
  createdAt: T0,
  ownerKeyId: null,
  ...o,
});
export const sandbox = (o: Partial<SandboxRecord> = {}): SandboxRecord => ({
  id: 'sbx-1',
  templateId: 'tpl-1',
  state: 'creating',
  memoryMiB: 512,
  vcpus: 1,
  metadata: {},
  envVars: {},
  accessToken: 'tok',
  createdAt: T0,
  startedAt: null,
  endAt: '2026-01-01T00:05:00.000Z',
  autoPause: false,
  autoResume: false,
  autoPauseMemory: true,
  pauseKind: null,
  network: OPEN_NETWORK,
  trafficToken: null,
  endReason: null,
  sourceSnapshotId: null,
  ownerKeyId: null,
  condition: null,
  ...o,
});
export const snapshot = (o: Partial<SnapshotRecord> = {}): SnapshotRecord => ({
  id: 'snap-1',
  name: null,
  kind: 'template',
  sandboxId: null,
  templateId: 'tpl-1',
  memoryMiB: 512,
  vcpus: 1,
  parentId: null,
  artifacts: [{ kind: 'memory', path: 'mem', size: 10, sha256: 'a'.repeat(64) }],
  guestToken: null,
  pauseMs: null,
  machine: 2,
  createdAt: T0,
  ownerKeyId: null,
  deletedAt: null,
  ...o,
});

/** A template build record: `building`, of template `tpl-9` named `app`. */
export const build = (o: Partial<TemplateBuildRecord> = {}): TemplateBuildRecord => ({
  id: 'bld-1',
  templateId: 'tpl-9',
  templateName: 'app',
  ownerKeyId: null,
  tags: [],
  status: 'building',
  vcpus: null,
  memoryMiB: null,
  spec: null,
  reason: null,
  builderId: null,
  layers: [],
  snapshotId: null,
  createdAt: T0,
  updatedAt: T0,
  finishedAt: null,
  ...o,
});

export function storeContract(name: string, fx: StoreFixture): void {
  describe(`Store contract: ${name}`, () => {
    it('templates: put, get by id or name, list, unique names, not_found', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.putTemplate(template({ id: 'tpl-2', name: 'python' }));
      assert.deepEqual(s.getTemplate('tpl-1'), template());
      assert.equal(s.getTemplate('python').id, 'tpl-2');
      assert.deepEqual(
        s.listTemplates().map((t) => t.name),
        ['base', 'python'],
      );
      assert.equal(
        code(() => {
          s.putTemplate(template({ id: 'tpl-3', name: 'base' }));
        }),
        'already_exists',
      );
      s.putTemplate(template({ snapshotId: null, memoryMiB: 1024 })); // same id: an update
      assert.equal(s.getTemplate('base').memoryMiB, 1024);
      assert.equal(
        code(() => s.getTemplate('nope')),
        'not_found',
      );
      s.deleteTemplate('tpl-2');
      assert.equal(
        code(() => {
          s.deleteTemplate('tpl-2');
        }),
        'not_found',
      );
      s.close();
    });

    it('sandboxes: insert and read back every field; duplicates and unknown templates refused', () => {
      const s = fx.open();
      s.putTemplate(template());
      const full = sandbox({
        metadata: { team: 'a', 'odd key"': 'v' },
        envVars: { A: '1' },
        autoPause: true,
        network: {
          egress: { allowOut: ['10.0.0.0/8', '*.example.com'], denyOut: ['0.0.0.0/0'], internet: false },
          allowPublicTraffic: false,
          maskRequestHost: 'localhost:${PORT}',
        },
        trafficToken: 'traffic-tok',
        condition: { code: 'disk_full', message: 'no space', since: T0 },
      });
      s.insertSandbox(full);
      assert.deepEqual(s.getSandbox('sbx-1'), full);
      assert.equal(
        code(() => {
          s.insertSandbox(full);
        }),
        'already_exists',
      );
      assert.equal(
        code(() => {
          s.insertSandbox(sandbox({ id: 'sbx-x', templateId: 'missing' }));
        }),
        'not_found',
      );
      assert.equal(
        code(() => s.getSandbox('sbx-none')),
        'not_found',
      );
      assert.equal(
        code(() => {
          s.deleteTemplate('tpl-1');
        }),
        'invalid_state',
        'a template with sandboxes stays',
      );
      s.close();
    });

    it('sandboxes: list filters by state, template and every metadata pair, and pages by cursor', () => {
      const s = fx.open();
      s.putTemplate(template());
      for (let i = 0; i < 7; i++) {
        s.insertSandbox(
          sandbox({
            id: `sbx-${i}`,
            state: i % 2 ? 'running' : 'creating',
            metadata: { i: String(i), team: i < 4 ? 'a' : 'b' },
          }),
        );
      }
      const ids = (f: Parameters<Store['listSandboxes']>[0]): string[] =>
        s.listSandboxes(f).items.map((x) => x.id);
      assert.deepEqual(ids({ states: ['running'] }), ['sbx-1', 'sbx-3', 'sbx-5']);
      assert.deepEqual(ids({ metadata: { team: 'a', i: '2' } }), ['sbx-2']);
      assert.deepEqual(ids({ metadata: { team: 'b' }, states: ['creating'] }), ['sbx-4', 'sbx-6']);
      assert.deepEqual(ids({ templateId: 'other' }), []);
      assert.deepEqual(ids({ withoutMetadataKey: 'team' }), []);
      assert.deepEqual(ids({ withoutMetadataKey: 'other', states: ['running'] }), [
        'sbx-1',
        'sbx-3',
        'sbx-5',
      ]);
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const p = s.listSandboxes({}, { limit: 3, cursor });
        seen.push(...p.items.map((x) => x.id));
        cursor = p.next;
        pages++;
      } while (cursor);
      assert.equal(pages, 3);
      assert.deepEqual(seen, ['sbx-0', 'sbx-1', 'sbx-2', 'sbx-3', 'sbx-4', 'sbx-5', 'sbx-6']);
      assert.equal(
        code(() => s.listSandboxes({}, { limit: 0 })),
        'invalid_argument',
      );
      assert.equal(
        code(() => s.listSandboxes({}, { cursor: "1' OR 1=1" })),
        'invalid_argument',
      );
      s.close();
    });

    it('sandboxes: order desc lists newest first and pages backwards; startedAfter filters by start (else creation) time', () => {
      const s = fx.open();
      s.putTemplate(template());
      for (let i = 0; i < 5; i++)
        s.insertSandbox(
          sandbox({
            id: `sbx-${i}`,
            createdAt: `2026-01-01T00:00:0${i}.000Z`,
            startedAt: i === 1 ? '2026-01-01T00:00:09.000Z' : null,
          }),
        );
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const p = s.listSandboxes({ order: 'desc' }, { limit: 2, cursor });
        seen.push(...p.items.map((x) => x.id));
        cursor = p.next;
      } while (cursor);
      assert.deepEqual(seen, ['sbx-4', 'sbx-3', 'sbx-2', 'sbx-1', 'sbx-0']);
      const after = (t: string, order?: 'asc' | 'desc'): string[] =>
        s.listSandboxes({ startedAfter: t, ...(order ? { order } : {}) }).items.map((x) => x.id);
      assert.deepEqual(after('2026-01-01T00:00:03.000Z'), ['sbx-1', 'sbx-3', 'sbx-4']);
      assert.deepEqual(after('2026-01-01T00:00:05.000Z', 'desc'), ['sbx-1']);
      s.close();
    });

    it('sandboxes: state changes follow the state machine; expect is a compare-and-set', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSandbox(sandbox());
      assert.equal(
        s.updateSandbox('sbx-1', { state: 'running', startedAt: T0 }, ['creating']).state,
        'running',
      );
      assert.equal(
        code(() => s.updateSandbox('sbx-1', { state: 'creating' })),
        'invalid_state',
        'no way back to creating',
      );
      assert.equal(
        code(() => s.updateSandbox('sbx-1', { state: 'killing' }, ['paused'])),
        'invalid_state',
        'CAS mismatch',
      );
      assert.equal(s.getSandbox('sbx-1').state, 'running', 'a refused change changed nothing');
      const ext = s.updateSandbox('sbx-1', { endAt: '2030-01-01T00:00:00.000Z', metadata: { k: 'v' } });
      assert.equal(ext.endAt, '2030-01-01T00:00:00.000Z');
      assert.deepEqual(s.getSandbox('sbx-1').metadata, { k: 'v' });
      // A condition is set and cleared without touching the rest.
      const cond = { code: 'unresponsive' as const, message: 'the guest agent does not answer', since: T0 };
      assert.deepEqual(s.updateSandbox('sbx-1', { condition: cond }).condition, cond);
      assert.deepEqual(s.getSandbox('sbx-1').condition, cond);
      assert.equal(s.getSandbox('sbx-1').state, 'running');
      assert.equal(s.updateSandbox('sbx-1', { condition: null }).condition, null);
      assert.equal(s.getSandbox('sbx-1').condition, null);
      // Network rules are replaced whole, and read back as written.
      const net = { ...OPEN_NETWORK, egress: { allowOut: ['192.0.2.0/24'], denyOut: [], internet: false } };
      assert.deepEqual(s.updateSandbox('sbx-1', { network: net }).network, net);
      assert.deepEqual(s.getSandbox('sbx-1').network, net);
      // What a pause keeps, and what the timeout's pause keeps, read back as written.
      s.updateSandbox('sbx-1', { pauseKind: 'filesystem', autoPauseMemory: false });
      assert.equal(s.getSandbox('sbx-1').pauseKind, 'filesystem');
      assert.equal(s.getSandbox('sbx-1').autoPauseMemory, false);
      assert.equal(s.updateSandbox('sbx-1', { pauseKind: null }).pauseKind, null);
      s.updateSandbox('sbx-1', { state: 'killing' }, ['running']);
      s.updateSandbox('sbx-1', { state: 'dead', endReason: 'killed' });
      assert.equal(
        code(() => s.updateSandbox('sbx-1', { state: 'running' })),
        'invalid_state',
        'dead is final',
      );
      assert.equal(
        code(() => s.updateSandbox('sbx-none', { endAt: T0 })),
        'not_found',
      );
      s.close();
    });

    it('snapshots: found by id or name; names unique; kind, token and pause time kept', () => {
      const s = fx.open();
      s.putTemplate(template());
      const named = snapshot({
        id: 'snap-a',
        name: 'my-snap',
        kind: 'snapshot',
        sandboxId: 'sbx-1',
        guestToken: 'tok-a',
        pauseMs: 12.5,
      });
      s.insertSnapshot(named);
      assert.deepEqual(s.getSnapshot('my-snap'), named);
      assert.deepEqual(s.getSnapshot('snap-a'), named);
      assert.equal(
        code(() => {
          s.insertSnapshot(snapshot({ id: 'snap-b', name: 'my-snap' }));
        }),
        'already_exists',
      );
      s.insertSnapshot(snapshot({ id: 'snap-c' }));
      const disk = [{ kind: 'disk' as const, path: 'disk.qcow2', size: 5, sha256: 'b'.repeat(64) }];
      assert.deepEqual(s.updateSnapshot('my-snap', { parentId: 'snap-c', artifacts: disk }), {
        ...named,
        parentId: 'snap-c',
        artifacts: disk,
      });
      assert.deepEqual(s.getSnapshot('snap-a').artifacts, disk);
      assert.equal(
        code(() => s.updateSnapshot('snap-a', { parentId: 'nope', artifacts: disk })),
        'not_found',
      );
      assert.deepEqual(
        s.listSnapshots().map((x) => x.id),
        ['snap-a', 'snap-c'],
      );
      assert.equal(
        code(() => s.getSnapshot('nope')),
        'not_found',
      );
      s.close();
    });

    it('snapshots: parents and live restores pin a snapshot; deletion refused until they are gone', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSnapshot(snapshot());
      s.insertSnapshot(snapshot({ id: 'snap-2', parentId: 'snap-1', sandboxId: 'sbx-1' }));
      assert.deepEqual(
        s.getSnapshot('snap-2'),
        snapshot({ id: 'snap-2', parentId: 'snap-1', sandboxId: 'sbx-1' }),
      );
      assert.equal(
        code(() => {
          s.insertSnapshot(snapshot());
        }),
        'already_exists',
      );
      assert.equal(
        code(() => {
          s.insertSnapshot(snapshot({ id: 'snap-9', parentId: 'nope' }));
        }),
        'not_found',
      );
      s.insertSandbox(sandbox({ id: 'clone', sourceSnapshotId: 'snap-2', state: 'running' }));
      assert.deepEqual(s.snapshotDependents('snap-1'), { snapshots: ['snap-2'], sandboxes: [] });
      assert.deepEqual(s.snapshotDependents('snap-2'), { snapshots: [], sandboxes: ['clone'] });
      assert.equal(
        code(() => {
          s.deleteSnapshot('snap-1');
        }),
        'invalid_state',
      );
      assert.equal(
        code(() => {
          s.deleteSnapshot('snap-2');
        }),
        'invalid_state',
      );
      s.updateSandbox('clone', { state: 'dead' });
      s.deleteSnapshot('snap-2');
      assert.equal(s.getSandbox('clone').sourceSnapshotId, null);
      s.deleteSnapshot('snap-1');
      assert.deepEqual(s.listSnapshots(), []);
      assert.equal(
        code(() => {
          s.deleteSnapshot('snap-1');
        }),
        'not_found',
      );
      s.close();
    });

    it('snapshots: hiding one frees its name at once; its record stays as a layer until reclaimed', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSnapshot(snapshot());
      s.insertSnapshot(snapshot({ id: 'snap-2', name: 'mine', kind: 'snapshot', parentId: 'snap-1' }));
      s.insertSnapshot(snapshot({ id: 'snap-3', kind: 'snapshot', parentId: 'snap-2' }));
      s.insertSandbox(sandbox({ id: 'src', sourceSnapshotId: 'snap-2', state: 'running' }));
      const at = '2026-01-02T03:04:05.000Z';
      const hidden = s.hideSnapshot('snap-2', at);
      assert.deepEqual(hidden, { ...s.getSnapshot('snap-2'), name: null, deletedAt: at });
      assert.equal(s.getSnapshot('snap-2').deletedAt, at, 'internal lookups by id still find the layer');
      assert.equal(
        code(() => s.getSnapshot('mine')),
        'not_found',
        'the name no longer leads to it',
      );
      s.insertSnapshot(snapshot({ id: 'snap-4', name: 'mine', kind: 'snapshot' }));
      assert.equal(s.getSnapshot('mine').id, 'snap-4', 'the name is free for a new snapshot');
      const ids = (f?: Parameters<typeof s.listSnapshots>[0]): string[] =>
        s.listSnapshots(f).map((x) => x.id);
      assert.deepEqual(ids(), ['snap-1', 'snap-2', 'snap-3', 'snap-4']);
      assert.deepEqual(ids({ deleted: false }), ['snap-1', 'snap-3', 'snap-4']);
      assert.deepEqual(ids({ deleted: true }), ['snap-2']);
      for (const again of ['snap-2', 'mine', 'nope'])
        assert.equal(
          code(() => s.hideSnapshot(again, at)),
          'not_found',
          again,
        );
      assert.deepEqual(s.snapshotDependents('snap-2'), { snapshots: ['snap-3'], sandboxes: ['src'] });
      assert.equal(
        code(() => {
          s.deleteSnapshot('snap-2');
        }),
        'invalid_state',
        'the layer is reclaimed only when nothing stands on it',
      );
      s.deleteSnapshot('snap-3');
      s.updateSandbox('src', { state: 'dead' });
      s.deleteSnapshot('snap-2');
      assert.deepEqual(ids(), ['snap-1', 'snap-4']);
      s.close();
    });

    it('owners: sandboxes, snapshots and templates keep the key that made them; lists filter by it; keys keep admin', () => {
      const s = fx.open();
      s.putTemplate(template({ ownerKeyId: 'key-a' }));
      s.putTemplate(template({ id: 'tpl-2', name: 'kilns' }));
      assert.equal(s.getTemplate('base').ownerKeyId, 'key-a');
      assert.equal(s.getTemplate('kilns').ownerKeyId, null);
      s.insertSandbox(sandbox({ id: 'a1', ownerKeyId: 'key-a' }));
      s.insertSandbox(sandbox({ id: 'b1', ownerKeyId: 'key-b' }));
      s.insertSandbox(sandbox({ id: 'a2', ownerKeyId: 'key-a' }));
      s.insertSandbox(sandbox({ id: 'n1' }));
      assert.deepEqual(
        s.listSandboxes({ ownerKeyId: 'key-a' }).items.map((x) => x.id),
        ['a1', 'a2'],
      );
      assert.deepEqual(
        s.listSandboxes({ ownerKeyId: 'key-a' }, { limit: 1 }).items.map((x) => x.id),
        ['a1'],
        'pages within the owner',
      );
      assert.deepEqual(
        s.listSandboxes().items.map((x) => x.ownerKeyId),
        ['key-a', 'key-b', 'key-a', null],
      );
      // The owner is fixed at creation: updates do not move it.
      assert.equal(s.updateSandbox('a1', { state: 'running', ownerKeyId: 'key-b' }).ownerKeyId, 'key-a');
      assert.equal(s.getSandbox('a1').ownerKeyId, 'key-a');
      s.insertSnapshot(snapshot({ id: 'snap-a', kind: 'snapshot', sandboxId: 'a1', ownerKeyId: 'key-a' }));
      assert.equal(s.getSnapshot('snap-a').ownerKeyId, 'key-a');
      assert.equal(s.listSnapshots({ sandboxId: 'a1' })[0]?.ownerKeyId, 'key-a');
      const k = {
        id: 'key-adm',
        name: 'root',
        keyHash: 'r'.repeat(64),
        prefix: 'e2b_r',
        createdAt: T0,
        lastUsedAt: null,
        admin: true,
      };
      s.insertApiKey(k);
      s.insertApiKey({ ...k, id: 'key-usr', keyHash: 'u'.repeat(64), admin: false });
      assert.equal(s.getApiKeyByHash('r'.repeat(64)).admin, true);
      assert.deepEqual(
        s.listApiKeys().map((x) => x.admin),
        [true, false],
      );
      s.close();
    });
  });
}
