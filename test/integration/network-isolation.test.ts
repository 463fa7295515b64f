/**
 * Sandbox network isolation on real QEMU guests (issue 12): each sandbox runs in a network
 * namespace of its own behind nftables. From inside a guest, the host's loopback, its other
 * addresses, kilnd's ports and other sandboxes are unreachable (refused at once), with internet
 * access on and off; a test host in a namespace of the test's own (a documentation address) is
 * reachable when the rules allow it and refused when they deny it, and new rules apply to a
 * running sandbox. Every namespace and interface is gone once the sandboxes are.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import type { EgressRules } from '../../src/core/network-policy.ts';
import type { SandboxService } from '../../src/daemon/sandbox-service.ts';
import { ALWAYS_DENIED } from '../../src/core/cidr.ts';
import { NS_TABLE, hostTable, instanceTag } from '../../src/net/names.ts';
import { SandboxNetworks } from '../../src/net/sandbox-networks.ts';
import { nullLogger } from '../../src/core/log.ts';
import { startEgressProxy } from '../../src/api/networks.ts';
import { UndoStack } from '../../src/core/undo.ts';
import { startFakeDns, type FakeDns } from '../../src/net/testing/dns-server.ts';
import { PROBE, assertRefused, startNetPeer, type NetPeer, type Probe } from '../helpers/net-peer.ts';
import { realHost, type RealHost } from '../helpers/service.ts';

/** Own namespaces and host interfaces of the instance `tag`. */
function ownObjects(tag: string): string[] {
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`kiln-${tag}-`));
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n.startsWith(`kn${tag}`));
  return [...ns, ...links].sort();
}

describe('sandbox network isolation (real VMs)', { timeout: 900_000 }, () => {
  let host: RealHost;
  let nets: SandboxNetworks;
  let svc: SandboxService;
  let peer: NetPeer;
  let local: Server;
  let localPort: number;
  let tag: string;
  let dns: FakeDns;
  const undo = new UndoStack();

  before(async () => {
    host = await realHost({ prefix: 'kiln-netiso-' });
    tag = instanceTag(host.root);
    peer = await startNetPeer();
    // A service on every host address: loopback, the host's own and the peer link's.
    local = createServer((_q, r) => r.end('host secret\n'));
    await new Promise<void>((r) => local.listen(0, '0.0.0.0', r));
    localPort = (local.address() as AddressInfo).port;
    nets = await SandboxNetworks.open({
      stateDir: host.root,
      pool: '10.231.0.0/16',
      alwaysDenied: ALWAYS_DENIED.map((r) => r.cidr),
      uid: process.getuid?.() ?? 0,
      log: nullLogger,
      ready: 1,
    });
    // Names the test controls: the egress proxy resolves through this server.
    dns = await startFakeDns({
      'allowed.test': [peer.addr],
      'other.test': [peer.addr],
      'sneaky.test': ['127.0.0.1'],
    });
    await startEgressProxy(nets, [dns.server], nullLogger, undo);
    svc = host.service({ networks: nets });
    await svc.reconcile();
    await svc.buildTemplate('base', host.image, { memoryMiB: 512, vcpus: 1 });
  });
  /** Each test starts with no sandbox left by the one before (a failed test skips its kills). */
  afterEach(async () => {
    for (const s of svc.list().items) if (s.state !== 'dead') await svc.kill(s.id).catch(() => undefined);
    await nets.filled();
  });
  after(async () => {
    await undo.unwind();
    await dns.close();
    await nets.close();
    local.close();
    await peer.close();
    await host.close();
    assert.deepEqual(ownObjects(tag), [], 'no namespace or interface of this test is left');
  });

  async function probe(id: string, targets: string[]): Promise<Probe> {
    const b64 = Buffer.from(PROBE).toString('base64');
    const r = await svc.exec(
      id,
      `echo ${b64} | base64 -d > /tmp/probe.py && python3 /tmp/probe.py ${targets.join(' ')}`,
      {
        user: 'root',
      },
    );
    return JSON.parse(r.stdout) as Probe;
  }

  async function agentOf(id: string): Promise<string> {
    const info = await host.driver.status(id);
    return `${info.agent.host}:${info.agent.port}`;
  }

  it('a sandbox reaches the test host but nothing of this host, its kilnd or another sandbox', async () => {
    const a = await svc.create({ template: 'base' });
    const b = await svc.create({ template: 'base' });
    const gw = (await host.driver.status(a.id)).agent.host.replace(/\.2$/, '.1');
    const hostEth = execFileSync('ip', ['-4', '-o', 'addr', 'show', 'scope', 'global'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => /inet (\d+\.\d+\.\d+\.\d+)/.exec(l)?.[1])
      .find((x) => x && !x.startsWith('10.231.') && !x.startsWith('198.51.100.'));
    const hostile = [
      `10.0.2.2:${localPort}`, // QEMU user-net's alias of the host loopback
      `${gw}:${localPort}`, // the namespace's gateway: the host
      `${peer.hostAddr}:${localPort}`, // another host-local address
      ...(hostEth ? [`${hostEth}:${localPort}`] : []),
      await agentOf(b.id), // the other sandbox's agent
      await agentOf(a.id), // its own agent's forward
      `169.254.169.254:80`,
    ];
    const p = await probe(a.id, [...hostile, `${peer.addr}:${peer.httpPort}`]);
    assertRefused(p, hostile);
    assert.equal(p[`${peer.addr}:${peer.httpPort}`]?.[0], 'open', JSON.stringify(p));
    // kilnd itself still reaches both agents.
    assert.equal((await svc.exec(b.id, 'echo ok')).stdout, 'ok\n');
    await svc.kill(b.id);
    await svc.kill(a.id);
  });

  it('internet off refuses the test host; an explicit allow lets it through; deny by CIDR; rules change on a running sandbox', async () => {
    const s = await svc.create({ template: 'base', allowInternet: false });
    const target = `${peer.addr}:${peer.httpPort}`;
    assertRefused(await probe(s.id, [target, `10.0.2.2:${localPort}`]), [target, `10.0.2.2:${localPort}`]);
    const ns = (await host.driver.status(s.id)).namespace;
    assert.ok(ns, 'the VM runs in a namespace');
    const apply = (r: EgressRules): Promise<void> => nets.apply(ns, r);
    await apply({ allowOut: [`${peer.addr}/32`], denyOut: [], internet: false });
    assert.equal((await probe(s.id, [target]))[target]?.[0], 'open');
    await apply({ allowOut: [], denyOut: ['198.51.100.0/24'], internet: true });
    assertRefused(await probe(s.id, [target]), [target]);
    // An explicit allow of a private range does not open the host (its input is closed to sandboxes).
    await apply({ allowOut: ['10.0.0.0/8', '198.51.100.0/24'], denyOut: [], internet: true });
    const gw = (await host.driver.status(s.id)).agent.host.replace(/\.2$/, '.1');
    const p = await probe(s.id, [target, `${gw}:${localPort}`, `${peer.hostAddr}:${localPort}`]);
    assert.equal(p[target]?.[0], 'open', JSON.stringify(p));
    assertRefused(p, [`${gw}:${localPort}`, `${peer.hostAddr}:${localPort}`]);
    await svc.kill(s.id);
  });

  /** `curl` from the guest: the HTTP status, or 000 when no answer came. */
  async function curl(id: string, url: string): Promise<string> {
    const r = await svc.exec(id, `curl -s -m 5 -o /dev/null -w '%{http_code}' ${url} || true`, {
      user: 'root',
    });
    return r.stdout.trim();
  }

  it('domain rules: an allowed name passes through the egress proxy, other names, bare addresses and names resolving into denied ranges do not', async () => {
    const s = await svc.create({
      template: 'base',
      network: {
        egress: { allowOut: ['allowed.test', 'sneaky.test'], denyOut: ['0.0.0.0/0'], internet: true },
        allowPublicTraffic: true,
      },
    });
    // The guest resolves the names by its hosts file; the proxy decides by the Host header.
    await svc.exec(s.id, `echo '${peer.addr} allowed.test other.test sneaky.test' >> /etc/hosts`, {
      user: 'root',
    });
    assert.equal(await curl(s.id, 'http://allowed.test/'), '200');
    assert.equal(await curl(s.id, 'http://other.test/'), '403');
    assert.equal(await curl(s.id, 'http://sneaky.test/'), '403', 'a name resolving to loopback is refused');
    assert.equal(await curl(s.id, `http://${peer.addr}/`), '403', 'a bare address is not a name rule');
    assertRefused(await probe(s.id, [`${peer.addr}:8080`]), [`${peer.addr}:8080`]);
    assert.ok(dns.queries.includes('allowed.test'));
  });

  it('rules set by updateNetwork hold on a running sandbox, after pause/resume and after a restarted service', async () => {
    const target = `${peer.addr}:${peer.httpPort}`;
    const s = await svc.create({ template: 'base' });
    assert.equal((await probe(s.id, [target]))[target]?.[0], 'open');
    await svc.updateNetwork(s.id, { allowOut: [], denyOut: [`${peer.addr}/32`], internet: true });
    assertRefused(await probe(s.id, [target]), [target]);
    await svc.pause(s.id);
    await nets.filled();
    assert.equal(ownObjects(tag).length, 2, `a paused sandbox holds no slot: ${ownObjects(tag).join(' ')}`);
    await svc.resume(s.id);
    assertRefused(await probe(s.id, [target]), [target]);
    await svc.updateNetwork(s.id, { allowOut: [peer.addr], denyOut: [], internet: false });
    assert.equal((await probe(s.id, [target]))[target]?.[0], 'open');
    // A restarted daemon: a new service over the same store, VMs and namespaces.
    svc = host.service({ networks: nets });
    const rec = await svc.reconcile();
    assert.deepEqual(rec.adopted, [s.id]);
    const p = await probe(s.id, [target, `10.0.2.2:${localPort}`]);
    assert.equal(p[target]?.[0], 'open', JSON.stringify(p));
    assertRefused(p, [`10.0.2.2:${localPort}`]);
  });

  it('namespaces and links exist for live sandboxes and the ready pool only; a restart removes strays', async () => {
    await nets.filled();
    const s = await svc.create({ template: 'base' });
    await nets.filled();
    // One slot in use, one ready: a namespace and a host interface each.
    assert.equal(ownObjects(tag).length, 4, ownObjects(tag).join(' '));
    // A stray slot (as a crash between making a slot and starting its VM leaves one).
    execFileSync('ip', ['netns', 'add', `kiln-${tag}-200`]);
    const rec = await svc.reconcile();
    assert.deepEqual(rec.dead, []);
    await nets.filled();
    assert.ok(!ownObjects(tag).includes(`kiln-${tag}-200`), 'the stray namespace was removed');
    assert.equal((await svc.exec(s.id, 'echo alive')).stdout, 'alive\n', 'the live sandbox kept its network');
    await svc.kill(s.id);
    await nets.filled();
    assert.equal(ownObjects(tag).length, 2, 'only the ready slot is left');
    assert.match(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }), new RegExp(hostTable(tag)));
  });

  it('a ready slot holds the rules of a create without any: claiming it for them loads nothing, other rules load', async () => {
    const table = (ns: string): string =>
      execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'nft', '-a', 'list', 'table', 'inet', NS_TABLE], {
        encoding: 'utf8',
      });
    /** The table's handle: a new one each time a ruleset is loaded. */
    const handle = (ns: string): string => /# handle (\d+)/.exec(table(ns))?.[1] ?? 'none';
    const readyNs = (): string[] => ownObjects(tag).filter((n) => n.startsWith(`kiln-${tag}-`));
    await nets.filled();
    const [first] = readyNs();
    assert.ok(first !== undefined && readyNs().length === 1, readyNs().join(' '));
    const loaded = handle(first);
    const held: string[] = [];
    try {
      const open = await nets.acquire({ allowOut: [], denyOut: [], internet: true }, 'test-open');
      held.push(open.namespace);
      assert.equal(open.namespace, `/run/netns/${first}`);
      assert.equal(handle(first), loaded, 'the made-ahead rules were kept, not loaded again');
      await nets.filled();
      const [second] = readyNs().filter((n) => n !== first);
      assert.ok(second !== undefined);
      const before = handle(second);
      const shut = await nets.acquire(
        { allowOut: [], denyOut: [`${peer.addr}/32`], internet: true },
        'test-deny',
      );
      held.push(shut.namespace);
      assert.equal(shut.namespace, `/run/netns/${second}`);
      assert.notEqual(handle(second), before, 'other rules were loaded');
      const peerAddr = new RegExp(`${peer.addr.replaceAll('.', '\\.')}(?!\\d)`);
      assert.match(table(second), peerAddr);
      assert.doesNotMatch(table(first), peerAddr);
    } finally {
      for (const ns of held) await nets.release(ns);
      await nets.filled();
    }
  });
});
