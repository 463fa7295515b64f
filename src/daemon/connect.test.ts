import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SandboxRecord, SandboxState } from '../core/domain.ts';
import { KilnError } from '../core/errors.ts';
import { SandboxConnector } from './connect.ts';
import type { SandboxService } from './sandbox-service.ts';

const T0 = Date.parse('2030-01-01T00:00:00.000Z');

/** A fake service holding one sandbox; records the calls the policy makes. */
function fake(state: SandboxState, endInS: number, o: { autoResume?: boolean; resumeFails?: boolean } = {}) {
  const calls: string[] = [];
  let s = {
    id: 'sbx-1',
    state,
    endAt: new Date(T0 + endInS * 1000).toISOString(),
    autoResume: o.autoResume ?? false,
  } as SandboxRecord;
  const svc = {
    get: () => s,
    resume: (_id: string, opts: { timeoutS?: number } = {}) => {
      calls.push(`resume ${opts.timeoutS ?? '-'}`);
      if (o.resumeFails) {
        // Someone else resumed it meanwhile.
        s = { ...s, state: 'running' };
        return Promise.reject(
          new KilnError('invalid_state', 'sandbox sbx-1 is running; resume needs paused'),
        );
      }
      s = { ...s, state: 'running' };
      return Promise.resolve(s);
    },
    setTimeout: (_id: string, t: number) => {
      calls.push(`timeout ${t}`);
      s = { ...s, endAt: new Date(T0 + t * 1000).toISOString() };
      return s;
    },
  } as unknown as SandboxService;
  return { svc, calls };
}

describe('SandboxConnector', () => {
  it('connect never shortens a running sandbox, and extends it on the service clock', async () => {
    const { svc, calls } = fake('running', 100);
    // The wall clock is years before T0: only the service clock says 100 s are left.
    const c = new SandboxConnector(svc, () => T0);
    assert.equal((await c.connect('sbx-1', { timeoutS: 50 })).resumed, false);
    assert.deepEqual(calls, [], '100 s left >= 50 s asked: unchanged');
    const r = await c.connect('sbx-1', { timeoutS: 200 });
    assert.deepEqual([r.resumed, calls], [false, ['timeout 200']]);
    await c.connect('sbx-1', {});
    assert.deepEqual(calls, ['timeout 200'], 'no timeout given: unchanged');
  });

  it('connect resumes a paused sandbox with the timeout asked (resumed: E2B answers 201)', async () => {
    const { svc, calls } = fake('paused', 0);
    const r = await new SandboxConnector(svc, () => T0).connect('sbx-1', { timeoutS: 60 });
    assert.deepEqual([r.resumed, r.sandbox.state, calls], [true, 'running', ['resume 60']]);
  });

  it('connect to a sandbox resumed by someone else meanwhile is a plain connect', async () => {
    const { svc } = fake('resuming', 0, { resumeFails: true });
    const r = await new SandboxConnector(svc, () => T0).connect('sbx-1', {});
    assert.deepEqual([r.resumed, r.sandbox.state], [false, 'running']);
  });

  it('connect to a sandbox being created is invalid_state', async () => {
    const { svc } = fake('creating', 0);
    await assert.rejects(new SandboxConnector(svc).connect('sbx-1', {}), { code: 'invalid_state' });
  });

  it('traffic resumes a paused autoResume sandbox once, however many requests wait; others are left alone', async () => {
    const a = fake('paused', 0, { autoResume: true });
    const ca = new SandboxConnector(a.svc);
    await Promise.all([ca.resumeOnTraffic('sbx-1'), ca.resumeOnTraffic('sbx-1')]);
    assert.deepEqual(a.calls, ['resume -']);
    const b = fake('paused', 0, { autoResume: false });
    await new SandboxConnector(b.svc).resumeOnTraffic('sbx-1');
    assert.deepEqual(b.calls, [], 'no autoResume: stays paused');
  });
});
