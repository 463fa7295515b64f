/**
 * The behaviour every `Store` must show, part two: the operations journal, template builds,
 * events, API keys, retention of ended sandboxes, and (for stores on disk) what survives a reopen.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EVENTS_PER_SANDBOX } from '../core/domain.ts';
import { build, code, sandbox, snapshot, T0, T1, template, type StoreFixture } from './store.contract.ts';

export function storeJournalContract(name: string, fx: StoreFixture): void {
  describe(`Store contract (journal, builds, events, keys, retention): ${name}`, () => {
    it('operations journal: begin, steps with undo, open list, finish once', () => {
      const s = fx.open();
      s.beginOperation({ id: 'op-1', kind: 'create', subject: 'sbx-1', requestId: 'req-9', startedAt: T0 });
      s.addStep('op-1', { name: 'vm started', undo: { action: 'kill-vm', vmId: 'sbx-1' }, at: T0 });
      s.addStep('op-1', { name: 'dir made', undo: { action: 'remove-path', path: '/x/y' }, at: T0 });
      s.beginOperation({ id: 'op-2', kind: 'kill', subject: 'sbx-2', requestId: null, startedAt: T0 });
      assert.deepEqual(
        s.openOperations().map((o) => o.id),
        ['op-1', 'op-2'],
      );
      const op = s.getOperation('op-1');
      assert.deepEqual(
        op.steps.map((x) => x.undo),
        [
          { action: 'kill-vm', vmId: 'sbx-1' },
          { action: 'remove-path', path: '/x/y' },
        ],
      );
      s.finishOperation('op-1', 'undone', 'boom');
      assert.equal(s.getOperation('op-1').state, 'undone');
      assert.equal(s.getOperation('op-1').error, 'boom');
      assert.equal(
        code(() => {
          s.finishOperation('op-1', 'done');
        }),
        'invalid_state',
      );
      assert.equal(
        code(() => {
          s.addStep('op-1', { name: 'late', undo: { action: 'none' }, at: T0 });
        }),
        'invalid_state',
      );
      assert.equal(
        code(() =>
          s.beginOperation({ id: 'op-2', kind: 'kill', subject: 'x', requestId: null, startedAt: T0 }),
        ),
        'already_exists',
      );
      assert.deepEqual(
        s.openOperations().map((o) => o.id),
        ['op-2'],
      );
      s.close();
    });

    it('builds: put, get, list; publishBuild writes the template and the build together or neither', () => {
      const s = fx.open();
      s.putTemplate(template());
      const b = build();
      s.putBuild(b);
      assert.deepEqual(s.getBuild('bld-1'), b);
      s.insertSnapshot(snapshot({ id: 'snap-9' }));
      const ready = { ...b, status: 'ready' as const, snapshotId: 'snap-9', finishedAt: T1 };
      s.publishBuild(template({ id: 'tpl-9', name: 'app', snapshotId: 'snap-9' }), ready);
      assert.equal(s.getTemplate('app').snapshotId, 'snap-9');
      assert.deepEqual(s.getBuild('bld-1'), ready);
      // A template that cannot be written (its name is taken) leaves the build as it was.
      s.putBuild(build({ id: 'bld-2' }));
      assert.equal(
        code(() => {
          s.publishBuild(template({ id: 'tpl-8', name: 'base' }), build({ id: 'bld-2', status: 'ready' }));
        }),
        'already_exists',
      );
      assert.equal(s.getBuild('bld-2').status, 'building');
      assert.equal(
        code(() => s.getTemplate('tpl-8')),
        'not_found',
      );
      assert.deepEqual(
        s.listBuilds().map((x) => x.id),
        ['bld-1', 'bld-2'],
      );
      s.close();
    });

    it(`events: bounded to ${EVENTS_PER_SANDBOX} per sandbox, paged by cursor, gone with their sandbox`, () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSandbox(sandbox({ id: 'a' }));
      s.insertSandbox(sandbox({ id: 'b' }));
      for (let i = 0; i < EVENTS_PER_SANDBOX + 5; i++) s.appendEvent('a', 'info', `m${i}`, { i });
      s.appendEvent('b', 'warn', 'other');
      const all: string[] = [];
      let cursor: string | undefined;
      do {
        const p = s.listEvents('a', { limit: 400, cursor });
        all.push(...p.items.map((e) => e.message));
        cursor = p.next;
      } while (cursor);
      assert.equal(all.length, EVENTS_PER_SANDBOX);
      assert.equal(all[0], 'm5', 'the oldest were dropped');
      assert.equal(all.at(-1), `m${EVENTS_PER_SANDBOX + 4}`);
      assert.deepEqual(
        s.listEvents('b').items.map((e) => [e.level, e.message, e.data]),
        [['warn', 'other', null]],
      );
      assert.equal(
        code(() => s.appendEvent('nope', 'info', 'x')),
        'not_found',
      );
      s.deleteSandbox('a');
      assert.deepEqual(s.listEvents('a').items, []);
      s.close();
    });

    it('API keys: insert, find by hash, list, touch, delete; ids and hashes unique', () => {
      const s = fx.open();
      const k = {
        id: 'key-1',
        name: 'ci',
        keyHash: 'h'.repeat(64),
        prefix: 'kiln_abc',
        createdAt: T0,
        lastUsedAt: null,
        admin: false,
      };
      s.insertApiKey(k);
      s.insertApiKey({ ...k, id: 'key-2', name: 'other', keyHash: 'g'.repeat(64), createdAt: T1 });
      assert.deepEqual(s.getApiKeyByHash('h'.repeat(64)), k);
      assert.equal(
        code(() => s.getApiKeyByHash('x'.repeat(64))),
        'not_found',
      );
      assert.equal(
        code(() => {
          s.insertApiKey({ ...k, id: 'key-3' });
        }),
        'already_exists',
        'same hash',
      );
      assert.equal(
        code(() => {
          s.insertApiKey({ ...k, keyHash: 'z'.repeat(64) });
        }),
        'already_exists',
        'same id',
      );
      s.touchApiKey('key-1', T1);
      assert.equal(s.getApiKeyByHash('h'.repeat(64)).lastUsedAt, T1);
      assert.deepEqual(
        s.listApiKeys().map((x) => x.id),
        ['key-1', 'key-2'],
      );
      s.deleteApiKey('key-1');
      assert.equal(
        code(() => {
          s.deleteApiKey('key-1');
        }),
        'not_found',
      );
      assert.equal(
        code(() => s.getApiKeyByHash('h'.repeat(64))),
        'not_found',
        'a revoked key is gone',
      );
      s.close();
    });

    it('retention: purgeEnded deletes sandboxes dead before the cutoff, their events and finished ops; keeps the rest', () => {
      const s = fx.open();
      s.putTemplate(template());
      const kill = (id: string): void => {
        s.updateSandbox(id, { state: 'dead', endReason: 'killed' });
      };
      for (const id of ['old', 'live', 'held', 'imported'])
        s.insertSandbox(sandbox({ id, state: id === 'imported' ? 'dead' : 'running' }));
      s.appendEvent('old', 'info', 'one');
      s.appendEvent('old', 'info', 'two');
      s.beginOperation({ id: 'op-done', kind: 'kill', subject: 'old', requestId: null, startedAt: T0 });
      s.finishOperation('op-done', 'done');
      s.beginOperation({ id: 'op-open', kind: 'kill', subject: 'old', requestId: null, startedAt: T0 });
      kill('old');
      kill('held');
      s.insertSnapshot(snapshot({ id: 'snap-h', kind: 'snapshot', sandboxId: 'held' }));
      s.updateSandbox('old', { endReason: 'later edit' }); // does not move the time it ended
      const before = new Date(Date.now() - 60_000).toISOString();
      assert.deepEqual(
        s.purgeEnded(before),
        { sandboxes: [], events: 0, operations: 0 },
        'none ended yet then',
      );
      const later = new Date(Date.now() + 60_000).toISOString();
      assert.deepEqual(s.purgeEnded(later), { sandboxes: ['old', 'imported'], events: 2, operations: 1 });
      assert.equal(
        code(() => s.getSandbox('old')),
        'not_found',
      );
      assert.deepEqual(s.listEvents('old').items, []);
      assert.deepEqual(
        s.openOperations().map((o) => o.id),
        ['op-open'],
        'an open journal entry is never purged',
      );
      assert.equal(s.getSandbox('live').state, 'running');
      assert.equal(s.getSandbox('held').state, 'dead', 'a snapshot taken from it keeps it');
      s.deleteSnapshot('snap-h');
      assert.deepEqual(s.purgeEnded(later).sandboxes, ['held']);
      assert.deepEqual(s.purgeEnded(later).sandboxes, [], 'nothing twice');
      assert.equal(
        code(() => s.purgeEnded('yesterday')),
        'invalid_argument',
      );
      s.close();
    });

    it('retention: a sandbox that dies after the cutoff is kept', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSandbox(sandbox({ state: 'running' }));
      const cutoff = new Date().toISOString();
      s.updateSandbox('sbx-1', { state: 'dead' });
      assert.deepEqual(s.purgeEnded(cutoff).sandboxes, []);
      assert.equal(s.getSandbox('sbx-1').state, 'dead');
      s.close();
    });

    if (fx.reopen) {
      const reopen = fx.reopen;
      it('what was committed is there after a reopen', () => {
        const s = fx.open();
        s.putTemplate(template());
        s.insertSandbox(sandbox({ metadata: { keep: 'me' } }));
        s.beginOperation({ id: 'op-r', kind: 'create', subject: 'sbx-1', requestId: null, startedAt: T0 });
        s.appendEvent('sbx-1', 'info', 'hello');
        const s2 = reopen(s);
        assert.deepEqual(s2.getSandbox('sbx-1').metadata, { keep: 'me' });
        assert.deepEqual(
          s2.openOperations().map((o) => o.id),
          ['op-r'],
        );
        assert.equal(s2.listEvents('sbx-1').items[0]?.message, 'hello');
        s2.close();
      });
    }

    it('warm pool: sizes per template (gone with it); members taken once, oldest ready first; they pin their layer', () => {
      const s = fx.open();
      s.putTemplate(template());
      s.insertSnapshot(snapshot());
      s.putTemplate(template({ snapshotId: 'snap-1' }));
      assert.deepEqual(s.poolSizes(), new Map());
      s.setPoolSize('tpl-1', 2);
      s.setPoolSize('tpl-1', 3);
      assert.deepEqual(s.poolSizes(), new Map([['tpl-1', 3]]));
      s.setPoolSize('tpl-1', null);
      assert.deepEqual(s.poolSizes(), new Map());
      const m = (id: string, createdAt: string) => ({
        id,
        templateId: 'tpl-1',
        snapshotId: 'snap-1',
        memoryMiB: 512,
        state: 'starting' as const,
        createdAt,
      });
      s.insertPoolVm(m('sbx-b', T1));
      s.insertPoolVm(m('sbx-a', T0));
      assert.equal(s.takePoolVm('snap-1'), undefined, 'a starting member is not taken');
      s.markPoolVmReady('sbx-b');
      s.markPoolVmReady('sbx-a');
      assert.equal(
        code(() => {
          s.markPoolVmReady('sbx-nope');
        }),
        'not_found',
      );
      assert.deepEqual(
        s.listPoolVms().map((x) => [x.id, x.state]),
        [
          ['sbx-a', 'ready'],
          ['sbx-b', 'ready'],
        ],
      );
      assert.deepEqual(s.snapshotDependents('snap-1').sandboxes, ['sbx-a', 'sbx-b']);
      assert.equal(
        code(() => {
          s.deleteSnapshot('snap-1');
        }),
        'invalid_state',
        'members pin the layer',
      );
      assert.deepEqual(s.takePoolVm('snap-1'), { ...m('sbx-a', T0), state: 'ready' });
      assert.equal(s.takePoolVm('snap-2'), undefined);
      assert.equal(s.deletePoolVm('sbx-b'), true);
      assert.equal(s.deletePoolVm('sbx-b'), false);
      assert.equal(s.takePoolVm('snap-1'), undefined);
      s.setPoolSize('tpl-1', 1);
      s.putTemplate(template({ snapshotId: null }));
      s.deleteTemplate('tpl-1');
      assert.deepEqual(s.poolSizes(), new Map(), "a template's size goes with it");
      s.close();
    });
  });
}
