// The vhost-user codec and a session driven over a socketpair by a test
// front-end, with a fake reactor pool: every message QEMU 7.2 sends, and hostile ones.
import { pino } from 'pino';
import { afterEach, describe, expect, test } from 'vitest';
import type { QueueHost, QueuePlacer } from '../../src/core/reactor-pool.js';
import type { QueueSpec, QueueStopped } from '../../src/core/messages.js';
import { mallocBdev } from '../../src/bdev/malloc.js';
import { VhostUserSession, PROTOCOL_FEATURES } from '../../src/frontend/vhost-user/session.js';
import {
  Req,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  type Hdr,
  checkRules,
  decodeHdr,
  decodeMemTable,
  type MemRegionMsg,
} from '../../src/frontend/vhost-user/proto.js';
import { E, loadNative } from '../../src/native/index.js';
import { blkConfig, blkFeatures, blkParams } from '../../src/virtio/blk-config.js';
import { bit, VHOST_USER_F_PROTOCOL_FEATURES_BIT, VIRTIO_F_RING_PACKED_BIT, VIRTIO_F_VERSION_1_BIT } from '../../src/virtio/constants.js';
import { u32pair, u64, vhostUserMessage } from './helpers/le-bytes.js';

const native = loadNative();

describe('vhost-user codec', () => {
  const hdr = (req: number, flags: number, size: number) => {
    const v = new DataView(new ArrayBuffer(12));
    v.setUint32(0, req, true);
    v.setUint32(4, flags, true);
    v.setUint32(8, size, true);
    return v;
  };
  const cases: [string, DataView, number][] = [
    ['good', hdr(Req.GET_FEATURES, 1, 0), 0],
    ['need-reply', hdr(Req.SET_MEM_TABLE, 1 | VHOST_USER_NEED_REPLY_MASK, 40), 0],
    ['version 0', hdr(Req.GET_FEATURES, 0, 0), -E.EPROTO],
    ['version 2', hdr(Req.GET_FEATURES, 2, 0), -E.EPROTO],
    ['reserved flag bit', hdr(Req.GET_FEATURES, 1 | 0x10, 0), -E.EPROTO],
    ['oversized payload', hdr(Req.SET_MEM_TABLE, 1, 1 << 20), -E.EMSGSIZE],
    ['short header', new DataView(new ArrayBuffer(8)), -E.EAGAIN],
  ];
  for (const [name, v, want] of cases) {
    test(`header: ${name}`, () => expect(decodeHdr(v, 0, { req: 0, flags: 0, size: 0 })).toBe(want));
  }

  const rules: [string, Hdr, number, number][] = [
    ['SET_VRING_NUM size 8', { req: Req.SET_VRING_NUM, flags: 1, size: 8 }, 0, 0],
    ['SET_VRING_NUM size 4', { req: Req.SET_VRING_NUM, flags: 1, size: 4 }, 0, -E.EPROTO],
    ['GET_FEATURES with an fd', { req: Req.GET_FEATURES, flags: 1, size: 0 }, 1, -E.EPROTO],
    ['ADD_MEM_REG without fd', { req: Req.ADD_MEM_REG, flags: 1, size: 40 }, 0, -E.EPROTO],
    ['kick with too many fds', { req: Req.SET_VRING_KICK, flags: 1, size: 8 }, 9, -E.EPROTO],
    ['unknown request', { req: 99, flags: 1, size: 0 }, 0, -E.EOPNOTSUPP],
  ];
  for (const [name, h, nfds, want] of rules) test(`rules: ${name}`, () => expect(checkRules(h, nfds)).toBe(want));

  test('memory table: counts, sizes and overflow are checked', () => {
    const v = new DataView(new ArrayBuffer(8 + 32 * 2));
    v.setUint32(0, 2, true);
    for (let i = 0; i < 2; i++) {
      v.setBigUint64(8 + 32 * i, BigInt(i) << 30n, true);
      v.setBigUint64(16 + 32 * i, 1n << 30n, true);
      v.setBigUint64(24 + 32 * i, 0x7f00_0000_0000n + (BigInt(i) << 30n), true);
    }
    const out: MemRegionMsg[] = [];
    expect(decodeMemTable(v, 0, 72, 2, out)).toBe(0);
    expect(out[1]).toEqual({ gpa: 1 << 30, size: 1 << 30, uva: 0x7f00_0000_0000 + (1 << 30), mmapOffset: 0 });
    expect(decodeMemTable(v, 0, 72, 1, out)).toBe(-E.EPROTO); // fd count mismatch
    expect(decodeMemTable(v, 0, 40, 2, out)).toBe(-E.EPROTO); // size mismatch
    v.setUint32(0, 9, true);
    expect(decodeMemTable(v, 0, 8 + 32 * 9, 9, out)).toBe(-E.EPROTO); // too many regions
    v.setUint32(0, 2, true);
    v.setBigUint64(16, 0n, true);
    expect(decodeMemTable(v, 0, 72, 2, out)).toBe(-E.EINVAL); // zero-sized region
    v.setBigUint64(16, 1n << 60n, true);
    expect(decodeMemTable(v, 0, 72, 2, out)).toBe(-E.EINVAL); // beyond 2^53
  });
});

class FakeHost implements QueueHost {
  readonly index = 0;
  added: QueueSpec[] = [];
  stopped: string[] = [];
  calls: [string, number][] = [];
  async addQueue(q: QueueSpec): Promise<void> {
    this.added.push(q);
  }
  async stopQueue(id: string): Promise<QueueStopped> {
    this.stopped.push(id);
    return { lastAvail: 42, usedIdx: 42 };
  }
  async setCall(id: string, fd: number): Promise<void> {
    this.calls.push([id, fd]);
  }
  async queueState(): Promise<QueueStopped> {
    return { lastAvail: 42, usedIdx: 42 };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A test front-end on the other end of a socketpair. */
class Front {
  readonly fd: number;
  private readonly rx = new Uint8Array(4096 + 12);
  private readonly fds = new Int32Array(9);
  constructor(fd: number) {
    this.fd = fd;
    native.setNonblocking(fd, true);
  }
  send(req: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = 1): void {
    const b = vhostUserMessage(req, payload, flags);
    expect(native.sendMsg(this.fd, b, 0, b.length, fds)).toBe(b.length);
  }
  /** fds that came with the last reply */
  lastFds: number[] = [];
  /** Next reply, or 'closed' when the session hung up. */
  async recv(timeoutMs = 2000): Promise<{ req: number; flags: number; payload: DataView } | 'closed'> {
    let got = 0;
    this.lastFds = [];
    const end = Date.now() + timeoutMs;
    let need = 12;
    while (got < need) {
      const n = native.recvMsg(this.fd, this.rx, got, need - got, this.fds);
      for (let i = 0; i < this.fds[0]!; i++) this.lastFds.push(this.fds[1 + i]!);
      this.fds[0] = 0;
      if (n === 0) return 'closed';
      if (n === -E.EAGAIN) {
        if (Date.now() > end) throw new Error('no reply');
        await sleep(2);
        continue;
      }
      if (n < 0) return 'closed';
      got += n;
      if (got === 12) need = 12 + new DataView(this.rx.buffer).getUint32(8, true);
    }
    const v = new DataView(this.rx.buffer);
    return { req: v.getUint32(0, true), flags: v.getUint32(4, true), payload: new DataView(this.rx.slice(12, need).buffer) };
  }
  async u64(req: number): Promise<bigint> {
    this.send(req);
    const r = await this.recv();
    if (r === 'closed') throw new Error('closed');
    expect(r.flags).toBe(0x5);
    expect(r.req).toBe(req);
    return r.payload.getBigUint64(0, true);
  }
}

describe('vhost-user session over a socketpair', () => {
  const bdev = mallocBdev.create(mallocBdev.normalize({ name: 'm', size: '64M' }));
  const opts = { numQueues: 2, queueSize: 128, readonly: false, serial: 'ser' };
  const blk = blkParams(bdev.info, opts);
  let cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup) await c();
    cleanup = [];
  });

  function start(extraFeatures = 0n) {
    const [a, b] = native.socketPair();
    native.setNonblocking(a, true);
    const host = new FakeHost();
    const pool: QueuePlacer = { pick: () => host };
    const log = pino({ level: 'silent' });
    const s = new VhostUserSession(a, { name: 't', native, pool, log, bdev, blk, numQueues: 2, features: blkFeatures(blk, 2) | extraFeatures, config: blkConfig(blk, opts) }, 1, () => () => {});
    const front = new Front(b);
    cleanup.push(async () => {
      await s.close();
      native.close(b);
    });
    return { s, front, host };
  }

  test('features, protocol features, queue count, config of the exact size asked', async () => {
    const { front } = start();
    const f = await front.u64(Req.GET_FEATURES);
    expect(f & bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT)).not.toBe(0n);
    expect(f & bit(VIRTIO_F_VERSION_1_BIT)).not.toBe(0n);
    expect(await front.u64(Req.GET_PROTOCOL_FEATURES)).toBe(PROTOCOL_FEATURES);
    front.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES));
    expect(await front.u64(Req.GET_QUEUE_NUM)).toBe(2n);
    const cfgReq = new Uint8Array(12 + 57);
    new DataView(cfgReq.buffer).setUint32(4, 57, true);
    front.send(Req.GET_CONFIG, cfgReq);
    const r = await front.recv();
    if (r === 'closed') throw new Error('closed');
    expect(r.payload.byteLength).toBe(12 + 57);
    expect(r.payload.getUint32(12, true)).toBe((64 << 20) / 512); // capacity
    expect(r.payload.getUint16(12 + 34, true)).toBe(2); // num_queues
  });

  test('REPLY_ACK: success is 0, a refused request is non-zero, unknown requests are refused', async () => {
    const { front } = start();
    front.send(Req.SET_PROTOCOL_FEATURES, u64(bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) | bit(VHOST_USER_PROTOCOL_F_CONFIG)));
    front.send(Req.SET_OWNER, new Uint8Array(0), [], 1 | VHOST_USER_NEED_REPLY_MASK);
    let r = await front.recv();
    expect(r !== 'closed' && r.payload.getBigUint64(0, true)).toBe(0n);
    front.send(Req.SET_FEATURES, u64(1n << 60n), [], 1 | VHOST_USER_NEED_REPLY_MASK);
    r = await front.recv();
    expect(r !== 'closed' && r.payload.getBigUint64(0, true)).toBe(1n);
    front.send(99, new Uint8Array(0), [], 1 | VHOST_USER_NEED_REPLY_MASK);
    r = await front.recv();
    expect(r !== 'closed' && r.req === 99 && r.payload.getBigUint64(0, true)).toBe(1n);
    // the session is still alive
    expect(await front.u64(Req.GET_QUEUE_NUM)).toBe(2n);
  });

  const hostile: [string, (f: Front) => void][] = [
    ['bad version', (f) => f.send(Req.GET_FEATURES, new Uint8Array(0), [], 2)],
    ['payload larger than any message', (f) => f.send(Req.SET_MEM_TABLE, new Uint8Array(5000))],
    ['SET_VRING_NUM with a 4-byte payload', (f) => f.send(Req.SET_VRING_NUM, new Uint8Array(4))],
    ['SET_MEM_TABLE claiming more regions than fds', (f) => f.send(Req.SET_MEM_TABLE, (() => { const b = new Uint8Array(8 + 32); b[0] = 1; return b; })())],
    ['kick with reserved bits', (f) => f.send(Req.SET_VRING_KICK, u64(0x1000n))],
    ['kick claiming NOFD but carrying an fd', (f) => f.send(Req.SET_VRING_KICK, u64(0x100n), [native.eventfd(0, 0)])],
  ];
  for (const [name, act] of hostile) {
    test(`hostile: ${name} ends the session, not the process`, async () => {
      const { front, s } = start();
      act(front);
      expect(await front.recv()).toBe('closed');
      await s.done;
    });
  }

  const inflightReq = (numQueues: number, queueSize: number, size = 0n, offset = 0n) => {
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, size, true);
    v.setBigUint64(8, offset, true);
    v.setUint16(16, numQueues, true);
    v.setUint16(18, queueSize, true);
    return b;
  };

  test('GET_INFLIGHT_FD: a zeroed memfd sized for the queues; a shape it cannot track gets "no region", never silence', async () => {
    const { front } = start();
    front.send(Req.GET_INFLIGHT_FD, inflightReq(2, 128));
    let r = await front.recv();
    if (r === 'closed') throw new Error('closed');
    expect(r.payload.getBigUint64(0, true)).toBe(2n * 2112n);
    expect(r.payload.getUint16(16, true)).toBe(2);
    expect(r.payload.getUint16(18, true)).toBe(128);
    expect(front.lastFds.length).toBe(1);
    const m = native.mmap(front.lastFds[0]!, 0, 2 * 2112, native.PROT_READ, native.MAP_SHARED);
    expect(new Uint8Array(m.buffer).every((x) => x === 0)).toBe(true);
    native.munmap(m.buffer, m.addr, 2 * 2112);
    native.close(front.lastFds[0]!);
    for (const [nq, qs] of [[3, 128], [2, 100], [0, 128]] as const) {
      front.send(Req.GET_INFLIGHT_FD, inflightReq(nq, qs));
      r = await front.recv();
      if (r === 'closed') throw new Error('closed');
      expect(r.payload.getBigUint64(0, true)).toBe(0n);
      expect(front.lastFds.length).toBe(0);
    }
  });

  test('GET_INFLIGHT_FD after packed rings were negotiated: a region in the packed layout (32 bytes per descriptor)', async () => {
    const { front } = start(bit(VIRTIO_F_RING_PACKED_BIT));
    front.send(Req.SET_FEATURES, u64(bit(VIRTIO_F_VERSION_1_BIT) | bit(VIRTIO_F_RING_PACKED_BIT)));
    front.send(Req.GET_INFLIGHT_FD, inflightReq(2, 128));
    const r = await front.recv();
    if (r === 'closed') throw new Error('closed');
    expect(r.payload.getBigUint64(0, true)).toBe(2n * 4160n);
    native.close(front.lastFds[0]!);
  });

  test('SET_INFLIGHT_FD with a region too small for its queues is refused (no ring starts on a guess), and the session goes on', async () => {
    const { front, s } = start();
    front.send(Req.SET_PROTOCOL_FEATURES, u64(bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)));
    const memfd = native.memfdCreate('inflight', 0);
    native.ftruncate(memfd, 4096);
    front.send(Req.SET_INFLIGHT_FD, inflightReq(2, 128, 2112n), [memfd], 1 | VHOST_USER_NEED_REPLY_MASK);
    native.close(memfd);
    const r = await front.recv();
    expect(r !== 'closed' && r.payload.getBigUint64(0, true)).toBe(1n);
    expect((s as unknown as { inflightRefused?: string }).inflightRefused).toMatch(/2112 bytes; 2 queues of 128 need 4224/);
    expect(await front.u64(Req.GET_QUEUE_NUM)).toBe(2n); // the session goes on
  });

  test('a queue index that does not exist is refused and its fd closed', async () => {
    const { front } = start();
    front.send(Req.SET_PROTOCOL_FEATURES, u64(bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)));
    const efd = native.eventfd(0, 0);
    front.send(Req.SET_VRING_CALL, u64(5n), [efd], 1 | VHOST_USER_NEED_REPLY_MASK);
    const r = await front.recv();
    expect(r !== 'closed' && r.payload.getBigUint64(0, true)).toBe(1n);
    native.close(efd);
  });

  /** Memory, features, size, base 7, addresses and kick of queue 1 (all but the enable); returns the kick fd. */
  async function prepareRing(front: Front, inflight?: () => void): Promise<number> {
    const memfd = native.memfdCreate('guest', 0);
    native.ftruncate(memfd, 1 << 20);
    const uva = 0x7f12_3400_0000;
    const table = new Uint8Array(8 + 32);
    const tv = new DataView(table.buffer);
    tv.setUint32(0, 1, true);
    tv.setBigUint64(8, 0n, true); // gpa
    tv.setBigUint64(16, BigInt(1 << 20), true); // size
    tv.setBigUint64(24, BigInt(uva), true);
    tv.setBigUint64(32, 0n, true);
    front.send(Req.GET_FEATURES);
    await front.recv();
    front.send(Req.SET_FEATURES, u64(blkFeatures(blk, 2) | bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT)));
    front.send(Req.SET_MEM_TABLE, table, [memfd]);
    native.close(memfd);
    inflight?.();
    front.send(Req.SET_VRING_NUM, u32pair(1, 128));
    front.send(Req.SET_VRING_BASE, u32pair(1, 7));
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setUint32(0, 1, true);
    av.setBigUint64(8, BigInt(uva), true); // desc
    av.setBigUint64(16, BigInt(uva + 0x2000), true); // used
    av.setBigUint64(24, BigInt(uva + 0x1000), true); // avail
    front.send(Req.SET_VRING_ADDR, addr);
    const kick = native.eventfd(0, native.EFD_NONBLOCK);
    front.send(Req.SET_VRING_KICK, u64(1n), [kick]);
    return kick;
  }

  test('a ring starts once memory, size, address, kick and enable are known; GET_VRING_BASE stops it', async () => {
    const { front, host } = start();
    const kick = await prepareRing(front);
    expect(await front.u64(Req.GET_QUEUE_NUM)).toBe(2n); // a barrier
    expect(host.added).toHaveLength(0); // not enabled yet: PROTOCOL_FEATURES was negotiated
    front.send(Req.SET_VRING_ENABLE, u32pair(1, 1));
    expect(await front.u64(Req.GET_QUEUE_NUM)).toBe(2n);
    expect(host.added).toHaveLength(1);
    const q = host.added[0]!;
    expect(q.size).toBe(128);
    expect(q.lastAvail).toBe(7);
    expect(q.eventIdx).toBe(true);
    expect(q.availAddr - q.descAddr).toBe(0x1000);
    expect(q.usedAddr - q.descAddr).toBe(0x2000);
    front.send(Req.GET_VRING_BASE, u32pair(1, 0));
    const r = await front.recv();
    if (r === 'closed') throw new Error('closed');
    expect([r.payload.getUint32(0, true), r.payload.getUint32(4, true)]).toEqual([1, 42]);
    expect(host.stopped).toEqual([q.id]);
    native.close(kick);
  });

  test('a ring state a dead vdx left for a malloc bdev (whose data died with it) is refused; the region this process made is not', async () => {
    const region = (own: boolean) => async (front: Front) => {
      front.send(Req.SET_PROTOCOL_FEATURES, u64(bit(VHOST_USER_PROTOCOL_F_REPLY_ACK)));
      let fd: number;
      if (own) {
        front.send(Req.GET_INFLIGHT_FD, inflightReq(2, 128));
        await front.recv();
        fd = front.lastFds[0]!;
      } else {
        fd = native.memfdCreate('a-dead-vdx-region', 0);
        native.ftruncate(fd, 2 * 2112);
      }
      const m = native.mmap(fd, 0, 2 * 2112, native.PROT_READ | native.PROT_WRITE, native.MAP_SHARED);
      new DataView(m.buffer).setUint16(2112 + 8, 1, true); // queue 1's part was in use
      new DataView(m.buffer).setUint16(2112 + 10, 128, true);
      native.munmap(m.buffer, m.addr, 2 * 2112);
      return fd;
    };
    for (const own of [false, true]) {
      const { front, host } = start();
      const fd = await region(own)(front);
      const kick = await prepareRing(front, () => front.send(Req.SET_INFLIGHT_FD, inflightReq(2, 128, 2n * 2112n), [fd]));
      native.close(fd);
      front.send(Req.SET_VRING_ENABLE, u32pair(1, 1), [], 1 | VHOST_USER_NEED_REPLY_MASK);
      const ack = await front.recv();
      expect(ack !== 'closed' && ack.payload.getBigUint64(0, true)).toBe(own ? 0n : 1n);
      expect(host.added).toHaveLength(own ? 1 : 0);
      native.close(kick);
    }
  });
});
