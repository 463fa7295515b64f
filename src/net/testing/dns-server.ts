/**
 * A tiny authoritative DNS server over UDP for tests: A and AAAA answers from a fixed table,
 * NXDOMAIN for names it does not know. Enough for node:dns (and a guest's resolver) to resolve
 * test names to addresses a test controls; no recursion, no TCP, no compression beyond the answer
 * pointing at the question.
 */

import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { isIPv4, isIPv6 } from 'node:net';

export interface FakeDns {
  /** `127.0.0.1:PORT`, for Resolver.setServers or EgressProxyOpts.dnsServers. */
  server: string;
  /** Names asked, in order (lowercase, no trailing dot). */
  queries: string[];
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

function readName(msg: Buffer, start: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let off = start;
  for (;;) {
    const len = msg[off];
    if (len === undefined || len > 63) return undefined;
    off += 1;
    if (len === 0) return { name: labels.join('.').toLowerCase(), end: off };
    labels.push(msg.toString('latin1', off, off + len));
    off += len;
  }
}

function rdata(type: number, address: string): Buffer | undefined {
  if (type === TYPE_A && isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (type === TYPE_AAAA && isIPv6(address)) {
    const [l = '', r = ''] = address.split('::');
    const head = l ? l.split(':') : [];
    const tail = r ? r.split(':') : [];
    const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
    return b;
  }
  return undefined;
}

function answer(msg: Buffer, table: Record<string, string[]>, queries: string[]): Buffer | undefined {
  if (msg.length < 12) return undefined;
  const q = readName(msg, 12);
  if (!q || q.end + 4 > msg.length) return undefined;
  const type = msg.readUInt16BE(q.end);
  queries.push(q.name);
  const known = table[q.name];
  const records = (known ?? []).map((a) => rdata(type, a)).filter((d): d is Buffer => d !== undefined);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(msg.readUInt16BE(0), 0);
  header.writeUInt16BE(known ? 0x8580 : 0x8583, 2); // response, authoritative, RD+RA; NXDOMAIN
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  const question = msg.subarray(12, q.end + 4);
  const answers = records.map((d) => {
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(type, 2);
    rr.writeUInt16BE(1, 4); // class IN
    rr.writeUInt32BE(5, 6); // TTL
    rr.writeUInt16BE(d.length, 10);
    return Buffer.concat([rr, d]);
  });
  return Buffer.concat([header, question, ...answers]);
}

/** Starts the server on 127.0.0.1 (a free port) answering from `table` (name -> addresses). */
export async function startFakeDns(table: Record<string, string[]>): Promise<FakeDns> {
  const socket: Socket = createSocket('udp4');
  const queries: string[] = [];
  socket.on('message', (msg, rinfo) => {
    const reply = answer(msg, table, queries);
    if (reply) socket.send(reply, rinfo.port, rinfo.address);
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return {
    server: `127.0.0.1:${socket.address().port}`,
    queries,
    close: () =>
      new Promise((resolve) =>
        socket.close(() => {
          resolve();
        }),
      ),
  };
}
