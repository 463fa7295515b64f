/**
 * A kilnd on one state dir for the crash tests (test/integration/failpoints*.test.ts): start it
 * with a failpoint armed, wait for it to die there, restart it, and look at what it left — its
 * records (read straight from kiln.db), its files, and the QEMU processes of THIS state dir only.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { pidAlive, sleep } from '../../src/core/proc.ts';
import { KilnClient } from '../../src/sdk/client.ts';
import { hostTable, instanceTag, slotOfNamespace } from '../../src/net/names.ts';
import { hostSlots } from '../../src/net/testing/host-slots.ts';
import { killOwnQemus, kilnSync, ownQemus, purgeHost } from './kilnd.ts';

export class CrashDaemon {
  readonly state: string;
  readonly c: KilnClient;

  constructor(state: string) {
    this.state = state;
    this.c = new KilnClient({ socketPath: `${state}/kilnd.sock` });
  }

  #env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KILN_STATE_DIR: this.state,
      KILN_E2B_API_PORT: '0',
      KILN_E2B_SANDBOX_PORT: '0',
    };
    delete env['KILN_FAILPOINT'];
    return env;
  }

  #kiln(env: NodeJS.ProcessEnv, ...args: string[]): void {
    const r = kilnSync(env, ...args);
    assert.equal(r.status, 0, `kiln ${args.join(' ')}: ${r.stderr}`);
  }

  /** Starts kilnd (detached), with `failpoint` armed if given. */
  start(failpoint?: string): void {
    this.#kiln({ ...this.#env(), ...(failpoint ? { KILN_FAILPOINT: failpoint } : {}) }, 'daemon', '--detach');
  }

  stop(): void {
    this.#kiln(this.#env(), 'daemon', 'stop');
  }

  /**
   * Stops kilnd if it runs (a failed test's), SIGKILLs this state dir's QEMUs and removes its
   * network namespaces, links, host table and agent guard table.
   */
  async cleanUp(): Promise<void> {
    kilnSync(this.#env(), 'daemon', 'stop');
    killOwnQemus(this.state);
    await purgeHost(this.state);
    assert.deepEqual(this.netSlots(), { namespaces: [], links: [] }, 'purgeHost left nothing');
  }

  /**
   * Starts kilnd with `failpoint` armed and runs `action`, which kilnd must not survive: it dies
   * at the failpoint (its log says so). A request that triggers the step itself must be refused
   * (kilnd died before answering); `answers: true` is for an action whose request is answered
   * and whose step comes after (the reaper's kill). Then kilnd is started again, unarmed.
   */
  async dieAt(
    failpoint: string,
    action: () => Promise<unknown>,
    o: { answers?: boolean; poolSlots?: 'lowest' | 'any' } = {},
  ): Promise<void> {
    this.start(failpoint);
    const pid = Number(readFileSync(`${this.state}/kilnd.pid`, 'utf8'));
    if (o.answers) await action();
    else await assert.rejects(action(), `kilnd answered instead of dying at ${failpoint}`);
    for (let i = 0; pidAlive(pid); i++) {
      assert.ok(i < 600, `kilnd ${pid} still alive 60 s after its failpoint`);
      await sleep(100);
    }
    assert.ok(
      readFileSync(`${this.state}/kilnd.log`, 'utf8').includes(`failpoint ${failpoint} hit`),
      `kilnd died at ${failpoint}`,
    );
    this.start();
    await this.assertNetworks(`after a crash at ${failpoint} and a restart`, 2, o.poolSlots);
  }

  /** The indexes of this kilnd's slots with a namespace, and with a host link (`kn<tag><n>`). */
  netSlots(): { namespaces: number[]; links: number[] } {
    return hostSlots(instanceTag(this.state));
  }

  /** The slot index of the namespace each of this state dir's QEMUs runs in. */
  qemuSlots(): number[] {
    const tag = instanceTag(this.state);
    return this.qemus().map((pid) => {
      // (ip also complains on stderr of namespaces being removed meanwhile, anyone's: ignored.)
      const ns = execFileSync('ip', ['netns', 'identify', pid], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
      const i = slotOfNamespace(tag, ns);
      assert.ok(i !== undefined, `QEMU ${pid} runs in a network namespace of this kilnd, not "${ns}"`);
      return i;
    });
  }

  /**
   * Right after kilnd (re)started, before any VM ended: this kilnd's namespaces and host links
   * are exactly the slots its QEMUs run in plus the `ready` pool, which a restarted kilnd fills
   * with the lowest free slots (waited for: it fills in the background); its host table exists.
   * A leaked slot fails this: it is not a QEMU's, and its index is not free for the pool.
   */
  async assertNetworks(when: string, ready = 2, poolSlots: 'lowest' | 'any' = 'lowest'): Promise<void> {
    const live = this.qemuSlots();
    const expected = [...live];
    for (let i = 0; expected.length < live.length + ready; i++) if (!live.includes(i)) expected.push(i);
    expected.sort((a, b) => a - b);
    const want = { namespaces: expected, links: expected };
    // `any`: a VM that start-up itself ended after the pool was filled (a template build's
    // builder) frees a slot below the pool's; no slot may be left over all the same.
    const ok = (n: { namespaces: number[]; links: number[] }): boolean =>
      poolSlots === 'lowest'
        ? JSON.stringify(n) === JSON.stringify(want)
        : JSON.stringify(n.namespaces) === JSON.stringify(n.links) &&
          n.namespaces.length === expected.length &&
          live.every((x) => n.namespaces.includes(x));
    let now = this.netSlots();
    for (let i = 0; i < 300 && !ok(now); i++) {
      await sleep(100);
      now = this.netSlots();
    }
    if (poolSlots === 'lowest')
      assert.deepEqual(now, want, `network slots ${when}: the QEMUs' (${live.join(',')}) and the pool's`);
    else
      assert.ok(
        ok(now),
        `network slots ${when}: the QEMUs' (${live.join(',')}) and ${String(ready)} for the pool, got ${JSON.stringify(now)}`,
      );
    const table = hostTable(instanceTag(this.state));
    assert.doesNotThrow(
      () => execFileSync('nft', ['list', 'table', 'inet', table], { stdio: 'ignore' }),
      `host table ${table} exists ${when}`,
    );
  }

  /** This state dir's QEMU processes only (their paths are under it). */
  qemus(): string[] {
    return ownQemus(this.state);
  }

  vmDirs(): string[] {
    return existsSync(`${this.state}/vms`) ? readdirSync(`${this.state}/vms`).sort() : [];
  }

  /** The entries of data/snapshots (snapshot directories and any staging directory). */
  snapshotDirs(): string[] {
    const d = `${this.state}/data/snapshots`;
    return existsSync(d) ? readdirSync(d).sort() : [];
  }

  /** Rows of kiln.db (read-only; kilnd may run). */
  /**
   * What a failed assertion should say about sandbox `id`: its record, its last events, and the
   * warnings and errors in kilnd's log (kept across restarts), so a failure on a loaded machine
   * can be explained from the test's output alone.
   */
  diagnosis(id: string): string {
    const rec = this.rows('SELECT state, end_reason, source_snapshot_id FROM sandboxes WHERE id = ?', id);
    const events = this.rows<{ level: string; message: string }>(
      'SELECT level, message FROM events WHERE sandbox_id = ? ORDER BY seq DESC LIMIT 8',
      id,
    );
    const log = existsSync(`${this.state}/kilnd.log`)
      ? readFileSync(`${this.state}/kilnd.log`, 'utf8')
          .split('\n')
          .filter((l) => /"level":(40|50|60)|failpoint|start-up|reconcil/.test(l))
          .slice(-25)
      : [];
    return [
      `sandbox ${id}: ${JSON.stringify(rec)}`,
      `its last events: ${JSON.stringify(events.reverse())}`,
      'kilnd log (warnings, errors, start-ups):',
      ...log,
    ].join('\n');
  }

  rows<T>(sql: string, ...params: SQLInputValue[]): T[] {
    // A kilnd that is stopping may still hold the database for a moment: wait for it.
    const db = new DatabaseSync(`${this.state}/kiln.db`, { readOnly: true, timeout: 10_000 });
    try {
      // Plain objects (the driver's have no prototype), for deepEqual.
      return db
        .prepare(sql)
        .all(...params)
        .map((r) => ({ ...r }) as T);
    } finally {
      db.close();
    }
  }

  openOps(): number {
    return this.rows(`SELECT id FROM operations WHERE state = 'running'`).length;
  }

  /** Every snapshot record's id, sorted: with no staging dir, exactly the snapshot directories. */
  snapshotIds(): string[] {
    return this.rows<{ id: string }>('SELECT id FROM snapshots ORDER BY id').map((r) => r.id);
  }

  /** The `<kind>:<step>` names of the newest finished operation of `kind` (or of `where`). */
  journalled(kind: string, where = ''): string[] {
    const r = this.rows<{ steps: string }>(
      `SELECT steps FROM operations WHERE kind = ? AND state = 'done' ${where} ORDER BY started_at DESC LIMIT 1`,
      kind,
    )[0];
    assert.ok(r, `a finished ${kind} in the journal`);
    return (JSON.parse(r.steps) as { name: string }[]).map((s) => `${kind}:${s.name}`);
  }

  /** Runs `cmd` in sandbox `id`; resolves with its stdout. */
  async sh(id: string, cmd: string): Promise<string> {
    let out = '';
    await this.c.exec(id, cmd, { onStdout: (x) => (out += x.toString()) });
    return out;
  }
}
