/**
 * Issue 10, items 2 and 3, on real guests: between a sandbox's restore and kilnd's /init its
 * guest agent obeys no one. Another local user (uid 65534) cannot even connect to the agent's
 * forwarded port (the nftables guard); root without the token is refused (401) for every
 * request, /init included; and a process hammering new agent ports every 10-30 ms does not make
 * creates fail. A driver wrapper runs the racers right after the VM is restored and before the
 * service's /init, so "before /init" is certain, not a matter of timing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import type { SandboxService } from '../../src/daemon/sandbox-service.ts';
import type { VmInfo } from '../../src/vmm/driver.ts';
import { agentGuardTable, applyAgentGuard, removeAgentGuard } from '../../src/vmm/qemu/agent-guard.ts';
import { afterStart, realHost, type RealHost } from '../helpers/service.ts';

const STRANGER = 65534;

/** Connects as uid 65534 (bash's /dev/tcp): 'connected', or the error bash reports. */
function strangerConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('/bin/bash', ['-c', `exec 3<>/dev/tcp/${host}/${port} && echo connected`], {
      uid: STRANGER,
      gid: STRANGER,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', () => {
      resolve(out.trim());
    });
  });
}

/** One request without a token, as root; resolves with the status code. */
function rootRequest(base: string, path: string, body: string, type = 'application/json'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        method: 'POST',
        agent: false,
        headers: { 'content-type': type, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          resolve(res.statusCode ?? 0);
        });
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error('no answer in 60 s')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('guest agents before /init (real guests)', { timeout: 1_500_000 }, () => {
  let host: RealHost;
  let svc: SandboxService;
  /** Runs once a sandbox VM is restored, before the service /init's its agent. */
  let beforeInit: ((info: VmInfo) => Promise<void>) | undefined;

  before(async () => {
    host = await realHost({ prefix: 'kiln-guard-' });
    // What kilnd does at start: a table of this instance's own, safe beside other kilnds.
    await applyAgentGuard({ table: agentGuardTable(host.root), uid: process.getuid?.() ?? 0 });
    const driver = afterStart(host.driver, async (spec, info) => {
      if (spec.id.startsWith('sbx-') && beforeInit) await beforeInit(info);
    });
    svc = host.service({ driver });
    await svc.buildTemplate('base', host.image, { memoryMiB: 512, vcpus: 1 });
  });
  after(async () => {
    await removeAgentGuard({ table: agentGuardTable(host.root) });
    await host.close();
  });

  it('before /init: uid 65534 cannot connect, root without the token gets 401 everywhere; the create succeeds', async () => {
    const seen: Record<string, number | string> = {};
    beforeInit = async (info) => {
      const { host: addr, port } = info.agent;
      const base = `http://${addr}:${port}`;
      seen['stranger connect'] = await strangerConnect(addr, port);
      seen['MakeDir'] = await rootRequest(
        base,
        '/filesystem.Filesystem/MakeDir',
        JSON.stringify({ path: '/root/racer-dir' }),
      );
      seen['Process.Start'] = await rootRequest(
        base,
        '/process.Process/Start',
        JSON.stringify({ process: { cmd: '/bin/sh', args: ['-c', 'touch /root/racer-proc'] } }),
      );
      seen['POST /files'] = await rootRequest(
        base,
        `/files?path=${encodeURIComponent('/root/racer-file')}&username=root`,
        'x',
        'application/octet-stream',
      );
      seen['/init'] = await rootRequest(
        base,
        '/init',
        JSON.stringify({ accessToken: 'stolen', envVars: { X: 'y' } }),
      );
    };
    const s = await svc.create({ template: 'base', envVars: { OWNER: 'yes' } });
    beforeInit = undefined;
    assert.match(String(seen['stranger connect']), /Connection refused/, 'refused at connect by the guard');
    assert.deepEqual(
      { ...seen, 'stranger connect': 'refused' },
      { 'stranger connect': 'refused', MakeDir: 401, 'Process.Start': 401, 'POST /files': 401, '/init': 401 },
    );
    const r = await svc.exec(s.id, 'ls -d /root/racer* 2>/dev/null | wc -l; echo "$OWNER $X"', {
      user: 'root',
    });
    assert.equal(r.stdout, '0\nyes \n', "nothing of the racer's exists and its /init took no effect");
    await svc.kill(s.id);
  });

  it('a root process hammering every new agent port every 10-30 ms makes no create fail', async () => {
    const racer = spawn(
      process.execPath,
      [
        join(import.meta.dirname, '../helpers/port-racer.ts'),
        JSON.stringify({
          host: '127.77.0.1',
          prefix: '/root/racer',
          marker: host.root,
          intervalMs: JSON.parse(process.env['KILN_RACER_MS'] ?? '[10, 30]') as [number, number],
        }),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const lines = createInterface({ input: racer.stdout })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    const failures: string[] = [];
    const leftovers: string[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        try {
          const s = await svc.create({ template: 'base' });
          const r = await svc.exec(s.id, 'ls -d /root/racer* 2>/dev/null | wc -l', { user: 'root' });
          if (r.stdout.trim() !== '0') leftovers.push(`${s.id}: ${r.stdout.trim()}`);
          await svc.kill(s.id);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    } finally {
      racer.kill('SIGTERM');
    }
    const report = JSON.parse(String((await lines.next()).value)) as {
      ports: number[];
      attempts: number;
      statuses: Record<string, number>;
    };
    assert.deepEqual(failures, [], 'every create succeeded');
    assert.deepEqual(leftovers, [], 'the racer created nothing');
    assert.ok(report.ports.length >= 6, `the racer found every new agent port: ${JSON.stringify(report)}`);
    const answered = Object.entries(report.statuses);
    // It really raced: every kind of request was answered, several times per port on average
    // (not a fixed count: the faster creates are, the shorter each port lives under attack).
    for (const kind of ['/filesystem.Filesystem/MakeDir', '/process.Process/Start', '/files', '/init'])
      assert.ok(
        answered.some(([k]) => k.startsWith(`${kind} `)),
        `the racer got answers to ${kind}: ${JSON.stringify(report)}`,
      );
    assert.ok(
      answered.reduce((n, [, c]) => n + c, 0) >= 5 * report.ports.length,
      `the racer got answers: ${JSON.stringify(report)}`,
    );
    for (const [k] of answered)
      assert.match(k, / 401$/, `the racer only ever got 401: ${JSON.stringify(report)}`);
  });
});
