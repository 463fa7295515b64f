import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from '../core/errors.ts';
import { chooseBlock, intToIpv4, ipv4ToInt, parsePool, slotAddresses } from './addressing.ts';

const ip = ipv4ToInt;

describe('addressing', () => {
  it('ipv4ToInt / intToIpv4 round-trip; a bad address is a TypeError', () => {
    for (const a of ['0.0.0.0', '10.231.4.1', '255.255.255.255']) assert.equal(intToIpv4(ip(a)), a);
    assert.equal(ip('10.0.0.1'), 167772161);
    for (const bad of ['10.0.0', '10.0.0.256', '10.0.0.x', '1.2.3.4.5', ''])
      assert.throws(() => ip(bad), TypeError, bad);
  });

  it('parsePool: /8 to /22 network addresses; every error names KILN_NET_POOL', () => {
    assert.deepEqual(parsePool('KILN_NET_POOL', '10.231.0.0/16'), { base: ip('10.231.0.0'), bits: 16 });
    assert.deepEqual(parsePool('KILN_NET_POOL', '10.0.0.0/8'), { base: ip('10.0.0.0'), bits: 8 });
    assert.deepEqual(parsePool('KILN_NET_POOL', '192.168.4.0/22'), { base: ip('192.168.4.0'), bits: 22 });
    for (const [bad, why] of [
      ['10.231.0.0/23', /from \/8 to \/22/],
      ['10.0.0.0/7', /from \/8 to \/22/],
      ['10.231.0.0', /IPv4 CIDR/],
      ['fd00::/16', /IPv4 CIDR/],
      ['10.300.0.0/16', /"10\.300\.0\.0" is not an IPv4 address/],
      ['10.231.1.0/16', /host bits set/],
    ] as const) {
      assert.throws(
        () => parsePool('KILN_NET_POOL', bad),
        (e: unknown) =>
          e instanceof KilnError &&
          e.code === 'invalid_argument' &&
          e.message.includes('KILN_NET_POOL') &&
          why.test(e.message),
        bad,
      );
    }
  });

  describe('chooseBlock', () => {
    const pool = parsePool('KILN_NET_POOL', '10.231.0.0/16'); // 64 blocks of /22
    it('starts at `start` when nothing is taken', () => {
      assert.deepEqual(chooseBlock(pool, 5, [], []), { base: ip('10.231.20.0'), cidr: '10.231.20.0/22' });
    });
    it('keeps the block of its own interfaces, even if another address is in it or start differs', () => {
      const own = [ip('10.231.9.1')]; // block 2
      assert.equal(chooseBlock(pool, 40, own, [ip('10.231.9.1'), ip('10.231.160.1')]).cidr, '10.231.8.0/22');
      // An own address outside the pool is not a block of it.
      assert.equal(chooseBlock(pool, 3, [ip('192.168.1.1')], []).cidr, '10.231.12.0/22');
    });
    it('skips the blocks any host address falls in, wrapping around the pool', () => {
      const used = [ip('10.231.252.1'), ip('10.231.253.9'), ip('10.231.0.5'), ip('172.17.0.1')];
      // start 63 (the last block) is taken, 0 too: the next free is 1.
      assert.equal(chooseBlock(pool, 63, [], used).cidr, '10.231.4.0/22');
    });
    it('every block taken: invalid_argument naming KILN_NET_POOL', () => {
      const small = parsePool('KILN_NET_POOL', '10.9.0.0/21'); // 2 blocks
      assert.equal(chooseBlock(small, 1, [], [ip('10.9.4.7')]).cidr, '10.9.0.0/22');
      assert.throws(
        () => chooseBlock(small, 0, [], [ip('10.9.0.1'), ip('10.9.4.1')]),
        (e: unknown) =>
          e instanceof KilnError && e.code === 'invalid_argument' && /KILN_NET_POOL.*in use/.test(e.message),
      );
    });
  });

  it('slotAddresses: slot n is the n-th /30 of the block, .1 the host, .2 the namespace', () => {
    const block = { base: ip('10.231.20.0'), cidr: '10.231.20.0/22' };
    assert.deepEqual(slotAddresses(block, 0), { host: '10.231.20.1', guest: '10.231.20.2' });
    assert.deepEqual(slotAddresses(block, 1), { host: '10.231.20.5', guest: '10.231.20.6' });
    assert.deepEqual(slotAddresses(block, 255), { host: '10.231.23.253', guest: '10.231.23.254' });
  });
});
