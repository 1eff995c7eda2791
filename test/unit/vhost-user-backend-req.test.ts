// The back-end request channel: SET_BACKEND_REQ_FD validated like every other
// message, CONFIG_CHANGE_MSG on resize, and a front-end that does not read (or
// went away) costing a log line and the channel, never a stall or a crash.
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import type { QueueHost, QueuePlacer } from '../../src/core/reactor-pool.js';
import type { QueueSpec, QueueStopped } from '../../src/core/messages.js';
import { mallocBdev } from '../../src/bdev/malloc.js';
import type { BdevDesc } from '../../src/bdev/types.js';
import { PROTOCOL_FEATURES, VhostUserSession } from '../../src/frontend/vhost-user/session.js';
import {
  BackendReq,
  type Hdr,
  Req,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  checkRules,
  decodeBackendReq,
  encodeBackendReq,
  encodeConfigChange,
} from '../../src/frontend/vhost-user/proto.js';
import { E, loadNative } from '../../src/native/index.js';
import { blkConfig, blkFeatures, blkParams } from '../../src/virtio/blk-config.js';
import { VHOST_USER_F_PROTOCOL_FEATURES_BIT, bit } from '../../src/virtio/constants.js';
import { u32pair, u64, vhostUserMessage } from './helpers/le-bytes.js';

const native = loadNative();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hdr = (): Hdr => ({ req: 0, flags: 0, size: 0 });

describe('back-end request codec', () => {
  test('CONFIG_CHANGE_MSG is a bare header: request 2, version 1, no REPLY/NEED_REPLY, size 0', () => {
    const v = new DataView(new ArrayBuffer(16));
    expect(encodeConfigChange(v, 0)).toBe(12);
    expect([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)]).toEqual([2, 1, 0]);
    const h = hdr();
    expect(decodeBackendReq(v, 0, h)).toBe(0);
    expect(h).toEqual({ req: BackendReq.CONFIG_CHANGE_MSG, flags: 1, size: 0 });
  });

  test('encode refuses a buffer too small for header + payload', () => {
    expect(encodeConfigChange(new DataView(new ArrayBuffer(11)), 0)).toBe(-E.EMSGSIZE);
    expect(encodeConfigChange(new DataView(new ArrayBuffer(16)), 8)).toBe(-E.EMSGSIZE);
    expect(encodeBackendReq(new DataView(new ArrayBuffer(20)), 0, BackendReq.IOTLB_MSG, 9)).toBe(-E.EMSGSIZE);
    expect(encodeBackendReq(new DataView(new ArrayBuffer(20)), 0, BackendReq.IOTLB_MSG, 8)).toBe(20);
  });

  test('decode: replies, bad versions, short and oversized headers are refused', () => {
    const v = new DataView(new ArrayBuffer(12));
    v.setUint32(0, 2, true);
    v.setUint32(4, 0x5, true); // a reply is never a back-end request
    expect(decodeBackendReq(v, 0, hdr())).toBe(-E.EPROTO);
    v.setUint32(4, 0x2, true);
    expect(decodeBackendReq(v, 0, hdr())).toBe(-E.EPROTO);
    v.setUint32(4, 0x1, true);
    v.setUint32(8, 1 << 20, true);
    expect(decodeBackendReq(v, 0, hdr())).toBe(-E.EMSGSIZE);
    expect(decodeBackendReq(new DataView(new ArrayBuffer(8)), 0, hdr())).toBe(-E.EAGAIN);
  });

  const rules: [string, number, number, number][] = [
    ['one fd, no payload', 0, 1, 0],
    ['no fd', 0, 0, -E.EPROTO],
    ['two fds', 0, 2, -E.EPROTO],
    ['a payload', 8, 1, -E.EPROTO],
  ];
  for (const [name, size, nfds, want] of rules) {
    test(`SET_BACKEND_REQ_FD rules: ${name}`, () => expect(checkRules({ req: Req.SET_BACKEND_REQ_FD, flags: 1, size }, nfds)).toBe(want));
  }

  test('offered with REPLY_ACK and CONFIG', () => {
    for (const b of [VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_PROTOCOL_F_BACKEND_REQ, VHOST_USER_PROTOCOL_F_CONFIG]) {
      expect(PROTOCOL_FEATURES & bit(b)).toBe(bit(b));
    }
  });
});

class FakeHost implements QueueHost {
  readonly index = 0;
  added: QueueSpec[] = [];
  async addQueue(q: QueueSpec): Promise<void> {
    this.added.push(q);
  }
  async stopQueue(): Promise<QueueStopped> {
    return { lastAvail: 0, usedIdx: 0 };
  }
  async setCall(): Promise<void> {}
  async queueState(): Promise<QueueStopped> {
    return { lastAvail: 0, usedIdx: 0 };
  }
}

/** Reads one end of a socket: the next whole message, 'closed' at EOF, 'none' when nothing came in `ms`. */
async function recvOn(fd: number, ms = 2000): Promise<{ req: number; flags: number; size: number; payload: DataView } | 'closed' | 'none'> {
  const rx = new Uint8Array(4096 + 12);
  const fds = new Int32Array(9);
  const end = Date.now() + ms;
  let got = 0;
  let need = 12;
  while (got < need) {
    const n = native.recvMsg(fd, rx, got, need - got, fds);
    for (let i = 0; i < fds[0]!; i++) native.close(fds[1 + i]!);
    if (n === 0) return 'closed';
    if (n === -E.EAGAIN) {
      if (Date.now() > end) {
        if (got === 0) return 'none';
        throw new Error('half a message');
      }
      await sleep(2);
      continue;
    }
    if (n < 0) return 'closed';
    got += n;
    if (got === 12) need = 12 + new DataView(rx.buffer).getUint32(8, true);
  }
  const v = new DataView(rx.buffer);
  return { req: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true), payload: new DataView(rx.slice(12, need).buffer) };
}

describe('back-end request channel in a session', () => {
  // malloc creates synchronously (the contract allows a Promise for remote bdevs)
  const bdev = mallocBdev.create(mallocBdev.normalize({ name: 'm', size: '64M' })) as BdevDesc;
  const opts = { numQueues: 1, queueSize: 128, readonly: false, serial: 'ser' };
  let cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.reverse()) await c();
    cleanup = [];
  });

  /** Our ends of the back-end socketpairs, closed after each test unless a test closed one itself. */
  const peers = new Set<number>();
  function pair(): [number, number] {
    const [a, b] = native.socketPair();
    native.setNonblocking(b, true);
    peers.add(b);
    return [a, b];
  }
  function closePeer(fd: number): void {
    peers.delete(fd);
    native.close(fd);
  }
  afterEach(() => {
    for (const fd of peers) native.close(fd);
    peers.clear();
  });

  function start() {
    const [a, b] = native.socketPair();
    native.setNonblocking(a, true);
    native.setNonblocking(b, true);
    const lines: { level: number; msg: string }[] = [];
    const log = pino(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
          cb();
        },
      }),
    );
    const blk = blkParams(bdev.info, opts);
    const ctx = { name: 't', native, pool: { pick: () => host } as QueuePlacer, log, bdev, blk, numQueues: 1, features: blkFeatures(blk, 1), config: blkConfig(blk, opts) };
    const host = new FakeHost();
    const s = new VhostUserSession(a, ctx, 1, () => () => {});
    const send = (req: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = 1 | VHOST_USER_NEED_REPLY_MASK) => {
      const m = vhostUserMessage(req, payload, flags);
      expect(native.sendMsg(b, m, 0, m.length, fds)).toBe(m.length);
    };
    /** The u64 REPLY_ACK answer (or reply) to the last request. */
    const ack = async () => {
      const r = await recvOn(b);
      if (typeof r === 'string') throw new Error(`no reply: ${r}`);
      return r.payload.getBigUint64(0, true);
    };
    cleanup.push(async () => {
      await s.close();
      native.close(b);
    });
    return { s, ctx, host, b, send, ack, lines };
  }

  /** QEMU 7.2's opening: protocol features with REPLY_ACK and BACKEND_REQ, then the channel. */
  async function withChannel(features = PROTOCOL_FEATURES) {
    const t = start();
    t.send(Req.SET_PROTOCOL_FEATURES, u64(features), [], 1);
    const [mine, theirs] = pair();
    t.send(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [mine]);
    native.close(mine); // the session holds the only copy now, as with QEMU
    return { ...t, theirs };
  }

  test('SET_BACKEND_REQ_FD is acked; a resize sends CONFIG_CHANGE_MSG; GET_CONFIG then has the new capacity', async () => {
    const { s, ctx, b, send, ack, theirs } = await withChannel();
    expect(await ack()).toBe(0n);
    ctx.blk = blkParams({ ...bdev.info, sizeBytes: 96 << 20 }, opts);
    ctx.config = blkConfig(ctx.blk, opts);
    s.configChanged();
    expect(await recvOn(theirs)).toMatchObject({ req: BackendReq.CONFIG_CHANGE_MSG, flags: 1, size: 0 });
    expect(await recvOn(theirs, 50)).toBe('none'); // one message per change
    const cfg = new Uint8Array(12 + 57);
    new DataView(cfg.buffer).setUint32(4, 57, true);
    send(Req.GET_CONFIG, cfg, [], 1);
    const r = await recvOn(b);
    if (typeof r === 'string') throw new Error(r);
    expect(r.payload.getUint32(12, true)).toBe((96 << 20) / 512);
  });

  for (const [name, nfds] of [['no fd', 0], ['two fds', 2]] as const) {
    test(`SET_BACKEND_REQ_FD with ${name} ends the session, every fd closed, the process fine`, async () => {
      const { s, send, b } = start();
      send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES), [], 1);
      const theirs: number[] = [];
      const sent: number[] = [];
      for (let i = 0; i < nfds; i++) {
        const [mine, peer] = pair();
        sent.push(mine);
        theirs.push(peer);
      }
      send(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), sent);
      for (const fd of sent) native.close(fd);
      expect(await recvOn(b)).toBe('closed');
      await s.done;
      for (const p of theirs) expect(await recvOn(p)).toBe('closed'); // the session's copies are closed too
    });
  }

  test('SET_BACKEND_REQ_FD without BACKEND_REQ negotiated is refused (non-zero ack), its fd closed, the session alive', async () => {
    const { ack, send, theirs } = await withChannel(PROTOCOL_FEATURES & ~bit(VHOST_USER_PROTOCOL_F_BACKEND_REQ));
    expect(await ack()).toBe(1n);
    expect(await recvOn(theirs)).toBe('closed');
    send(Req.GET_QUEUE_NUM, new Uint8Array(0), [], 1);
    expect(await ack()).toBe(1n); // GET_QUEUE_NUM's own reply: one queue
  });

  test('an fd that is not a socket (eventfd) is refused and closed; the session carries on', async () => {
    const t = start();
    t.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_FEATURES), [], 1);
    const efd = native.eventfd(0, 0);
    t.send(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [efd]);
    native.close(efd);
    expect(await t.ack()).toBe(1n);
    t.s.configChanged(); // no channel: nothing to send, nothing thrown
    expect(t.lines.some((l) => /no back-end request channel/.test(l.msg))).toBe(true);
  });

  test('a second SET_BACKEND_REQ_FD replaces (and closes) the first', async () => {
    const { s, send, ack, theirs } = await withChannel();
    expect(await ack()).toBe(0n);
    const [mine2, theirs2] = pair();
    send(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [mine2]);
    native.close(mine2);
    expect(await ack()).toBe(0n);
    expect(await recvOn(theirs)).toBe('closed');
    s.configChanged();
    expect(await recvOn(theirs2)).toMatchObject({ req: BackendReq.CONFIG_CHANGE_MSG });
  });

  test('a front-end that closed its end: the failed send is logged, the channel dropped, the session alive', async () => {
    const { s, send, ack, theirs, lines } = await withChannel();
    expect(await ack()).toBe(0n);
    closePeer(theirs);
    s.configChanged();
    expect(lines.some((l) => l.level === 40 && /CONFIG_CHANGE_MSG failed \(errno 32\); dropping the channel/.test(l.msg))).toBe(true);
    s.configChanged(); // dropped: no second attempt
    expect(lines.filter((l) => l.level === 40)).toHaveLength(1);
    send(Req.GET_QUEUE_NUM, new Uint8Array(0), [], 1);
    expect(await ack()).toBe(1n);
  });

  test('a front-end that never reads: sends never block; when its buffer is full the channel is dropped', async () => {
    const { s, ack, theirs, lines } = await withChannel();
    expect(await ack()).toBe(0n);
    const t0 = performance.now();
    let n = 0;
    for (; n < 1_000_000 && !lines.some((l) => l.level === 40); n++) s.configChanged();
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(lines.some((l) => /CONFIG_CHANGE_MSG failed \(errno 11\); dropping the channel/.test(l.msg))).toBe(true);
    // everything before the failure arrived whole; then EOF (the session closed its end)
    let got = 0;
    for (;;) {
      const m = await recvOn(theirs, 500);
      if (m === 'closed') break;
      if (m === 'none') throw new Error('neither a message nor EOF');
      expect(m.req).toBe(BackendReq.CONFIG_CHANGE_MSG);
      got++;
    }
    expect(got).toBe(n - 1);
  });

  test('session end closes the channel', async () => {
    const { s, ack, theirs } = await withChannel();
    expect(await ack()).toBe(0n);
    await s.close();
    expect(await recvOn(theirs)).toBe('closed');
    s.configChanged(); // after the end: a no-op
  });

  /** Memory, ring 0 and its kick: enough for the session to start the ring. */
  async function startRing(t: ReturnType<typeof start>) {
    const memfd = native.memfdCreate('guest', 0);
    native.ftruncate(memfd, 1 << 20);
    const uva = 0x7f12_3400_0000;
    const table = new Uint8Array(8 + 32);
    const tv = new DataView(table.buffer);
    tv.setUint32(0, 1, true);
    tv.setBigUint64(16, BigInt(1 << 20), true);
    tv.setBigUint64(24, BigInt(uva), true);
    const blk = blkParams(bdev.info, opts);
    t.send(Req.SET_FEATURES, u64(blkFeatures(blk, 1) | bit(VHOST_USER_F_PROTOCOL_FEATURES_BIT)), [], 1);
    t.send(Req.SET_MEM_TABLE, table, [memfd], 1);
    native.close(memfd);
    t.send(Req.SET_VRING_NUM, u32pair(0, 128), [], 1);
    const addr = new Uint8Array(40);
    const av = new DataView(addr.buffer);
    av.setBigUint64(8, BigInt(uva), true);
    av.setBigUint64(16, BigInt(uva + 0x2000), true);
    av.setBigUint64(24, BigInt(uva + 0x1000), true);
    t.send(Req.SET_VRING_ADDR, addr, [], 1);
    const kick = native.eventfd(0, native.EFD_NONBLOCK);
    t.send(Req.SET_VRING_KICK, u64(0n), [kick], 1);
    native.close(kick);
    t.send(Req.SET_VRING_ENABLE, u32pair(0, 1));
    expect(await t.ack()).toBe(0n);
    expect(t.host.added).toHaveLength(1);
  }

  test('QEMU 7.2 ignores the message while its device is stopped: a change with no ring running is sent again when one starts', async () => {
    const t = await withChannel();
    expect(await t.ack()).toBe(0n);
    const cfg = new Uint8Array(12 + 57);
    new DataView(cfg.buffer).setUint32(4, 57, true);
    t.send(Req.GET_CONFIG, cfg, [], 1); // realize: the front-end has the current config
    await recvOn(t.b);
    t.s.configChanged();
    expect(await recvOn(t.theirs)).toMatchObject({ req: BackendReq.CONFIG_CHANGE_MSG });
    await startRing(t);
    expect(await recvOn(t.theirs)).toMatchObject({ req: BackendReq.CONFIG_CHANGE_MSG });
  });

  test('a fresh front-end that read the config gets no message at ring start; a reconnected one (no GET_CONFIG) does', async () => {
    const fresh = await withChannel();
    expect(await fresh.ack()).toBe(0n);
    const cfg = new Uint8Array(12 + 57);
    new DataView(cfg.buffer).setUint32(4, 57, true);
    fresh.send(Req.GET_CONFIG, cfg, [], 1);
    await recvOn(fresh.b);
    await startRing(fresh);
    expect(await recvOn(fresh.theirs, 100)).toBe('none');

    const reconnected = await withChannel();
    expect(await reconnected.ack()).toBe(0n);
    await startRing(reconnected);
    expect(await recvOn(reconnected.theirs)).toMatchObject({ req: BackendReq.CONFIG_CHANGE_MSG });
  });
});
